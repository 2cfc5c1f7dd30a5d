"""A tiny JSON path: dotted keys and array indexes, compiled once, resolved per message.

Syntax (documented in docs/connectors/mqtt-json.md):

- ``""`` or ``"$"``: the whole document (or the whole sample);
- ``temp``: the key ``temp`` of an object; ``data.temp``: nested keys;
- ``values[0]``, ``[2]``, ``samples[-1].t``: array elements, counted from 0, negative from the
  end.

Keys cannot contain ``.``, ``[`` or ``]``; there are no wildcards or filters. That covers the
payloads of real devices while staying one loop over a few steps per lookup.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["JsonPath", "PathMissing"]

_STEP = re.compile(r"\.?([^.\[\]]+)|\[(-?\d+)\]")


class PathMissing(LookupError):
    """The document has nothing at the path (or the wrong kind of container on the way)."""


class JsonPath:
    """A compiled path; :meth:`get` returns the value there or raises :class:`PathMissing`."""

    __slots__ = ("steps", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.steps: tuple[str | int, ...] = _compile(text)

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"

    def get(self, doc: Any) -> Any:
        node = doc
        for step in self.steps:
            if isinstance(step, str):
                if not isinstance(node, dict):
                    raise PathMissing(f"{self.text}: {step!r} looked up in {_kind(node)}")
                try:
                    node = node[step]
                except KeyError:
                    raise PathMissing(f"{self.text}: no key {step!r}") from None
            else:
                if not isinstance(node, list):
                    raise PathMissing(f"{self.text}: [{step}] looked up in {_kind(node)}")
                try:
                    node = node[step]
                except IndexError:
                    raise PathMissing(f"{self.text}: index {step} of {len(node)} items") from None
        return node


def _compile(text: str) -> tuple[str | int, ...]:
    if text in ("", "$"):
        return ()
    body = text[2:] if text.startswith("$.") else text[1:] if text.startswith("$[") else text
    steps: list[str | int] = []
    pos = 0
    while pos < len(body):
        m = _STEP.match(body, pos)
        if m is None or (m.group(0).startswith(".") and pos == 0):
            raise ValueError(f"invalid JSON path {text!r} at character {pos + 1}")
        key, index = m.groups()
        steps.append(key if key is not None else int(index))
        pos = m.end()
    return tuple(steps)


def _kind(node: Any) -> str:
    if isinstance(node, dict):
        return "an object"
    if isinstance(node, list):
        return "an array"
    return f"a {type(node).__name__}" if node is not None else "null"
