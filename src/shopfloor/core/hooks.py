"""Pluggy hooks: the extension points plugins implement, and the plugin manager that finds them.

A plugin is any object (usually a module) with functions marked ``@hookimpl``, registered in
an entry-point group. Built-ins register exactly as third parties do: Shopfloor's own alarm
actions are listed in ``[project.entry-points."shopfloor.actions"]`` of its ``pyproject.toml``,
and a third-party package adds its own lines to the same group::

    # my_package/actions.py
    from shopfloor.core.hooks import hookimpl

    @hookimpl
    def shopfloor_alarm_actions():
        return {"teams": TeamsAction}

    # its pyproject.toml
    [project.entry-points."shopfloor.actions"]
    teams = "my_package.actions"

``plugin_manager()`` loads every plugin of the group; ``pm.hook.shopfloor_alarm_actions()``
then answers one mapping per plugin (see ``shopfloor.rules.actions.action_classes``).
"""

from __future__ import annotations

from typing import Any, Final

import pluggy

__all__ = ["ACTIONS_GROUP", "PROJECT", "Specs", "hookimpl", "hookspec", "plugin_manager"]

PROJECT: Final = "shopfloor"
ACTIONS_GROUP: Final = "shopfloor.actions"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Specs:
    """The hook specifications (pluggy reads the marked methods; no instance is made)."""

    @hookspec
    def shopfloor_alarm_actions(self) -> dict[str, type[Any]]:  # type: ignore[empty-body]
        """Alarm action classes this plugin provides, by kind name (``{"webhook": cls}``).

        Each class subclasses ``shopfloor.rules.actions.Action``; a kind name is 1-32
        lower-case letters, digits or ``_`` and must be unique across installed plugins."""


def plugin_manager(group: str = ACTIONS_GROUP) -> pluggy.PluginManager:
    """A plugin manager with Shopfloor's hookspecs and every plugin of the entry-point group."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(Specs)
    pm.load_setuptools_entrypoints(group)
    return pm
