"""The hierarchy: enterprise > site > area > line > machine, with live state colours."""

from __future__ import annotations

from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.client import ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import failure, frame, require_login
from shopfloor.ui.session import api

# The demo factory's PackML-like state codes (docs/simulator.md); other plants map theirs.
STATE_COLOURS: Final = {0: "grey", 1: "amber", 2: "green", 3: "orange", 4: "red", 5: "blue"}
STATE_KEYS: Final = {
    0: "state.off",
    1: "state.idle",
    2: "state.running",
    3: "state.blocked",
    4: "state.down",
    5: "state.changeover",
}


def _nodes(tree: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tree nodes: assets with their devices; a machine holding one device of its own name
    is shown as that device (one click to its page)."""
    out = []
    for node in tree:
        children = _nodes(node.get("children", []))
        devices = [str(d) for d in node.get("devices", [])]
        if devices == [node["name"]] and not children:
            out.append(
                {"id": f"device:{node['name']}", "label": node["name"], "device": node["name"]}
            )
            continue
        children += [{"id": f"device:{d}", "label": d, "device": d} for d in devices]
        out.append({"id": f"asset:{node['id']}", "label": node["name"], "children": children})
    return out


def _devices(nodes: list[dict[str, Any]]) -> list[str]:
    found = []
    for n in nodes:
        if "device" in n:
            found.append(n["device"])
        found += _devices(n.get("children", []))
    return found


def _open_device(e: Any) -> None:
    value = str(e.value or "")
    if value.startswith("device:"):
        ui.navigate.to(f"/machine/{value.split(':', 1)[1]}")


@ui.page("/")
async def tree_page() -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("tree.title"):
        try:
            tree = await client.get("/tree")
        except ApiError as exc:  # e.g. an auditor, or a platform admin without a grant
            failure(exc)
            return None
        nodes = _nodes(tree)
        devices = _devices(nodes)
        with ui.row().classes("w-full gap-8 items-start"):
            ui.tree(nodes, label_key="label", on_select=_open_device).expand().props(
                'data-testid="tree" aria-label="hierarchy"'
            )
            board = ui.grid(columns=4).classes("gap-2").props('data-testid="states"')

        cards: dict[str, ui.label] = {}
        with board:
            for name in devices:
                link = ui.link(target=f"/machine/{name}").classes("no-underline")
                with link, ui.card().classes("p-2 w-40"):
                    ui.label(name).classes("font-bold")
                    cards[name] = ui.label("…").props(f'data-testid="state-{name}"')

        # Only machines with a state signal are asked for one: the API refuses the whole
        # call when one key is unknown (a device that sends no state, e.g. a new machine).
        try:
            keys = {str(s["key"]) for s in await client.get("/signals")}
        except ApiError as exc:
            failure(exc)
            return None
        stated = [n for n in devices if f"{n}/state" in keys]
        for name in devices:
            if name not in stated:
                cards[name].text = t("state.unknown")

        async def refresh() -> None:
            if not stated:
                return
            try:
                latest = await client.get("/latest", signal=[f"{n}/state" for n in stated])
            except ApiError:  # a session or grant ended: the next page load says why
                return
            for point in latest.get("points", []):
                name = str(point["signal"]).rsplit("/", 1)[0]
                if name not in cards or point.get("value") is None:
                    continue
                code = int(point["value"])
                label = cards[name]
                label.text = t(STATE_KEYS.get(code, "state.unknown"))
                label.classes(replace=f"text-{STATE_COLOURS.get(code, 'grey')}-700")

        await refresh()
        ui.timer(5.0, refresh)
    return None
