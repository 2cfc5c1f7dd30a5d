"""The console's pages; importing this package registers them with NiceGUI."""

from shopfloor.ui.pages import alarms, apps, login, machine, tree

__all__ = ["alarms", "apps", "login", "machine", "tree"]
