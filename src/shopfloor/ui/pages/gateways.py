"""Device onboarding: the tenant's edge gateways with their sync state, and one gateway's page
to add a Modbus TCP or OPC UA device (browsing the OPC UA server through the gateway) or to
remove one.

A gateway's devices live in its *remote configuration* on the platform (``GET|PUT
/gateways/{name}/config``): a list of connector sections exactly as in ``edge.yaml``. The
gateway long-polls it, applies it and reports the version it runs, so the page can show
"pending" until the gateway has the change ("in sync"), or the gateway's error. Saving is
read-modify-write with ``expected_version``: a configuration changed by someone else in
between is refused (409) rather than overwritten, and the page reloads it.

The device type goes into the device's entry of the section (``device_type``): the platform
registers a missing device with that type, under the gateway, when the configuration is saved,
so the device has its type's signals before the gateway's first reading arrives (the gateway
strips the field before its connectors see it). An existing device keeps its type; the page
says so.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from typing import Any, Final

from fastapi.responses import RedirectResponse
from nicegui import ui

from shopfloor.ui.client import ApiClient, ApiError
from shopfloor.ui.i18n import t
from shopfloor.ui.layout import frame, require_login
from shopfloor.ui.session import api

TABLES: Final = ("holding", "input", "coil", "discrete")
BIT_TABLES: Final = frozenset({"coil", "discrete"})
# Register data types offered in the form (a bool in a register needs a bit, a string a
# length: those stay for edge.yaml or the API).
REGISTER_TYPES: Final = ("uint16", "int16", "uint32", "int32", "float32", "float64")
BROWSE_POLL_S: Final = 0.5
BROWSE_WAIT_S: Final = 60.0
REFRESH_S: Final = 2.0
_NOT_NAME: Final = re.compile(r"[^A-Za-z0-9_.\-]+")
_LOCATION: Final = re.compile(r"^connectors\[(\d+)\]\.?(.*)$")
_INDEXED: Final = re.compile(r"^(points|nodes)\[(\d+)\]\.?(.*)$")


# ---------------------------------------------------------------------------------------------
# The configuration as data: pure functions, so the merge rules are tested without a browser.
# ---------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    """A connector or signal name from free text (edge.yaml allows ``[A-Za-z0-9_.-]``)."""
    return _NOT_NAME.sub("-", text).strip("-") or "x"


def devices_of(connectors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per device of a configuration: connector, protocol, address, signal count."""
    rows: list[dict[str, Any]] = []
    for c in connectors:
        kind = str(c.get("type", ""))
        if kind == "modbus":
            for conn in c.get("connections") or []:
                where = conn.get("serial_port") or f"{conn.get('host')}:{conn.get('port', 502)}"
                for d in conn.get("devices") or []:
                    rows.append(
                        {
                            "device": d.get("name"),
                            "connector": c.get("name"),
                            "protocol": "Modbus TCP" if conn.get("transport") == "tcp" else "RTU",
                            "address": f"{where} · unit {d.get('unit_id', 1)}",
                            "signals": len(d.get("points") or []),
                            "device_type": d.get("device_type") or "",
                        }
                    )
        elif kind == "opcua":
            for d in c.get("devices") or []:
                rows.append(
                    {
                        "device": d.get("name"),
                        "connector": c.get("name"),
                        "protocol": "OPC UA",
                        "address": c.get("endpoint"),
                        "signals": len(d.get("nodes") or []),
                        "device_type": d.get("device_type") or "",
                    }
                )
        else:  # a connector the form does not edit (simulator, S7, MQTT): shown as itself
            rows.append(
                {
                    "device": c.get("name"),
                    "connector": c.get("name"),
                    "protocol": kind,
                    "address": "",
                    "signals": "",
                    "device_type": "",
                }
            )
    return rows


def remove_device(connectors: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The configuration without device ``name``; connections and connectors left empty go too
    (the connector models refuse an empty device list)."""
    out: list[dict[str, Any]] = []
    for c in copy.deepcopy(connectors):
        kind = c.get("type")
        if kind == "modbus":
            conns = []
            for conn in c.get("connections") or []:
                conn["devices"] = [d for d in conn.get("devices") or [] if d.get("name") != name]
                if conn["devices"]:
                    conns.append(conn)
            if not conns:
                continue
            c["connections"] = conns
        elif kind == "opcua":
            c["devices"] = [d for d in c.get("devices") or [] if d.get("name") != name]
            if not c["devices"]:
                continue
        elif c.get("name") == name:
            continue
        out.append(c)
    return out


def _free_name(connectors: list[dict[str, Any]], base: str) -> str:
    taken = {str(c.get("name")) for c in connectors}
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def merge_modbus(
    connectors: list[dict[str, Any]], host: str, port: int, device: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    """Add (or replace) a Modbus TCP device; returns the configuration and its connector's index.

    A device already on a connection to the same host and port joins that connection (one
    socket per Modbus TCP gateway, as the connector wants it); otherwise it gets a connector
    of its own, so removing it later touches nothing else."""
    out = remove_device(connectors, str(device["name"]))
    for i, c in enumerate(out):
        if c.get("type") != "modbus":
            continue
        for conn in c.get("connections") or []:
            if conn.get("transport") == "tcp" and (conn.get("host"), conn.get("port", 502)) == (
                host,
                port,
            ):
                conn["devices"].append(device)
                return out, i
    section = {
        "type": "modbus",
        "name": _free_name(out, slug(f"modbus-{device['name']}")),
        "connections": [
            {
                "name": str(device["name"]),
                "transport": "tcp",
                "host": host,
                "port": port,
                "devices": [device],
            }
        ],
    }
    return [*out, section], len(out)


def merge_opcua(
    connectors: list[dict[str, Any]], endpoint: str, device: dict[str, Any]
) -> tuple[list[dict[str, Any]], int]:
    """Add (or replace) an OPC UA device; devices of one server share its connector (one
    session per server)."""
    out = remove_device(connectors, str(device["name"]))
    for i, c in enumerate(out):
        if c.get("type") == "opcua" and c.get("endpoint") == endpoint:
            c["devices"].append(device)
            return out, i
    section = {
        "type": "opcua",
        "name": _free_name(out, slug(f"opcua-{device['name']}")),
        "endpoint": endpoint,
        "devices": [device],
    }
    return [*out, section], len(out)


def form_field(location: str | None, index: int) -> tuple[str, int | None, str] | None:
    """Which control of the form an API error names, for the connector at ``index``.

    ``connectors[2].connections[0].devices[0].points[1].address`` -> ``("points", 1,
    "address")``; ``connectors[2].endpoint`` -> ``("endpoint", None, "")``. ``None`` when the
    error is about another connector (or about no connector): shown above the form instead."""
    if not location:
        return None
    location = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", location)  # "connectors.2" spelling too
    m = _LOCATION.match(location)
    if m is None or int(m.group(1)) != index:
        return None
    rest = re.sub(r"^(connections\[\d+\]\.?)?(devices\[\d+\]\.?)?", "", m.group(2))
    rows = _INDEXED.match(rest)
    if rows:
        return rows.group(1), int(rows.group(2)), rows.group(3)
    return (rest.split(".", 1)[0] or "name"), None, ""


def tree_of(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A browse result (variables with their browse paths) as ui.tree nodes: folders from the
    path, the variables as leaves keyed by node id."""
    root: dict[str, Any] = {"children": {}}
    for n in nodes:
        parts = [p for p in str(n.get("browse_path") or n.get("name") or "").split("/") if p]
        here = root
        for depth, part in enumerate(parts[:-1]):
            key = "/".join(parts[: depth + 1])
            here = here["children"].setdefault(part, {"id": f"path:{key}", "children": {}})
            here.setdefault("label", part)
        label = f"{parts[-1] if parts else n['node_id']} ({n.get('data_type', '?')})"
        here["children"][f"node:{n['node_id']}"] = {"id": str(n["node_id"]), "label": label}

    def listed(level: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for item in level["children"].values():
            entry = {"id": item["id"], "label": item.get("label", item["id"])}
            if "children" in item:
                entry["children"] = listed(item)
            out.append(entry)
        return out

    return listed(root)


def signals_for(picked: list[dict[str, Any]]) -> list[dict[str, str]]:
    """OPC UA nodes of a device with signal names from their browse names, made unique."""
    seen: set[str] = set()
    out = []
    for n in picked:
        base = slug(str(n.get("name") or str(n.get("browse_path", "")).rsplit("/", 1)[-1]))
        name, k = base, 2
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        seen.add(name)
        out.append({"node_id": str(n["node_id"]), "signal": name})
    return out


# ---------------------------------------------------------------------------------------------
# Texts
# ---------------------------------------------------------------------------------------------


def sync_text(sync: str | None, version: Any, applied: Any, error: str | None) -> str:
    if sync == "in_sync":
        return t("gateways.sync_in_sync", version=version)
    if sync == "pending":
        return t(
            "gateways.sync_pending", version=version, applied="-" if applied is None else applied
        )
    if sync == "error":
        return t("gateways.sync_error", reason=error or "?")
    return t("gateways.sync_never_seen")


SYNC_COLOURS: Final = {"in_sync": "green", "pending": "amber", "error": "red"}


def _refused(exc: ApiError) -> str:
    return t("app.error", reason=f"{exc.field}: {exc.message}" if exc.field else exc.message)


# ---------------------------------------------------------------------------------------------
# The list of gateways
# ---------------------------------------------------------------------------------------------


@ui.page("/gateways")
async def gateways_page() -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    with frame("gateways.title"):
        ui.label(t("gateways.intro")).classes("text-sm")
        # A table of NiceGUI elements rather than ui.table: a refresh changes the texts of
        # the cells in place, so the links (and the keyboard focus on one) stay as they are.
        table = (
            ui.element("div")
            .props(f'role="table" data-testid="gateways" aria-label="{t("gateways.title")}"')
            .classes("grid grid-cols-4 gap-x-8 gap-y-2 items-center")
        )
        with table, ui.element("div").props('role="row"').classes("contents"):
            ui.label(t("gateways.gateway")).props('role="columnheader"').classes("font-bold")
            ui.label(t("gateways.sync")).props('role="columnheader"').classes("font-bold")
            ui.label(t("gateways.devices")).props('role="columnheader"').classes("font-bold")
            ui.label(t("gateways.last_seen")).props('role="columnheader"').classes("font-bold")
        cells: dict[str, dict[str, Any]] = {}

        def add_row(name: str) -> dict[str, Any]:
            with table, ui.element("div").props('role="row"').classes("contents") as row:
                with ui.element("div").props('role="cell"'):
                    ui.link(name, f"/gateways/{name}").props(f'data-testid="gateway-{name}"')
                sync = ui.label("").props(f'role="cell" data-testid="sync-{name}"')
                devices = ui.label("").props('role="cell"')
                seen = ui.label("").props('role="cell"')
            return {"row": row, "sync": sync, "devices": devices, "seen": seen, "colour": ""}

        empty = ui.label(t("gateways.none")).props('data-testid="no-gateways"')
        notice = ui.label("").props('role="status" data-testid="gateways-notice"')
        with ui.row().classes("items-center gap-2"):
            open_name = (
                ui.input(t("gateways.open_name")).props('data-testid="open-name"').classes("w-64")
            )

            def open_gateway() -> None:
                name = str(open_name.value or "").strip()
                if name:
                    ui.navigate.to(f"/gateways/{name}")

            open_name.on("keydown.enter", open_gateway)
            ui.button(t("gateways.open"), on_click=open_gateway).props('data-testid="open"')

        async def refresh() -> None:
            try:
                data = await client.get("/gateways")
            except ApiError as exc:
                notice.text = _refused(exc)
                return
            notice.text = ""
            names = [str(g["name"]) for g in data]
            for gone in set(cells) - set(names):
                table.remove(cells.pop(gone)["row"])
            for g in data:
                row = cells.get(str(g["name"])) or cells.setdefault(
                    str(g["name"]), add_row(str(g["name"]))
                )
                row["sync"].text = sync_text(
                    g.get("sync"),
                    g.get("desired_version"),
                    g.get("applied_version"),
                    g.get("error"),
                )
                colour = SYNC_COLOURS.get(str(g.get("sync")), "grey")
                if colour != row["colour"]:
                    row["colour"] = colour
                    row["sync"].classes(replace=f"text-{colour}-800")
                row["devices"].text = str(g.get("devices", ""))
                row["seen"].text = str(g.get("last_seen") or "—")
            empty.visible = not names

        await refresh()
        ui.timer(REFRESH_S, refresh)
    return None


# ---------------------------------------------------------------------------------------------
# One gateway: its devices, add and remove
# ---------------------------------------------------------------------------------------------


class _Register:
    """One row of the register table of the Modbus form."""

    def __init__(self, parent: Any, n: int, on_remove: Any) -> None:
        label = t("gateways.register_n", n=n + 1)
        with (
            parent,
            ui.column().classes("gap-0") as self.row,
            ui.row().classes("items-center gap-2"),
        ):
            self.address = (
                ui.number(t("gateways.address"), value=n, min=0, max=65535, precision=0)
                .props(f'dense aria-label="{label}: {t("gateways.address")}"')
                .classes("w-28")
            )
            self.table = (
                ui.select({k: k for k in TABLES}, value="holding", label=t("gateways.kind"))
                .props(f'dense aria-label="{label}: {t("gateways.kind")}"')
                .classes("w-32")
            )
            self.type = (
                ui.select({k: k for k in REGISTER_TYPES}, value="uint16", label=t("gateways.type"))
                .props(f'dense aria-label="{label}: {t("gateways.type")}"')
                .classes("w-32")
            )
            self.name = (
                ui.input(t("gateways.signal"))
                .props(f'dense aria-label="{label}: {t("gateways.signal")}"')
                .classes("w-40")
            )
            self.scale = (
                ui.number(t("gateways.scale"), value=1.0)
                .props(f'dense aria-label="{label}: {t("gateways.scale")}"')
                .classes("w-28")
            )
            ui.button(icon="delete", on_click=lambda: on_remove(self)).props(
                f'flat dense aria-label="{t("gateways.remove_register", n=n + 1)}"'
            )
        with self.row:
            # The API's message for this register: below the row, where it has room.
            self.problem = (
                ui.label("")
                .classes("text-red-800 text-sm")
                .props(f'role="alert" data-testid="register-{n}-problem"')
            )
        # A coil or discrete input is a bit: no data type, no scale.
        self.table.on_value_change(lambda _: self._bit_table())

    def _bit_table(self) -> None:
        bits = self.table.value in BIT_TABLES
        self.type.visible = not bits
        self.scale.visible = not bits

    def controls(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "table": self.table,
            "type": self.type,
            "name": self.name,
            "scale": self.scale,
        }

    def point(self) -> dict[str, Any]:
        p: dict[str, Any] = {
            "name": str(self.name.value or "").strip(),
            "table": self.table.value,
            "address": None if self.address.value is None else int(self.address.value),
        }
        if self.table.value not in BIT_TABLES:
            p["type"] = self.type.value
            if self.scale.value is not None and float(self.scale.value) != 1.0:
                p["scale"] = float(self.scale.value)
        return p


def _without_place(message: str) -> str:
    """``connectors[0]....port: Input should be ...`` -> ``Input should be ...``: shown at the
    field, the place is the field itself."""
    head, sep, rest = message.partition(": ")
    return rest if sep and head.startswith("connectors[") else message


def _mark(el: Any, message: str) -> None:
    el.props["error"] = True
    el.props["error-message"] = message
    el.update()


def _unmark(el: Any) -> None:
    el.props.pop("error", None)
    el.props.pop("error-message", None)
    el.update()


async def _device_types(client: ApiClient) -> dict[str, str]:
    options = {"": t("gateways.no_type")}
    try:
        for dt in await client.get("/device-types"):
            options[str(dt["name"])] = str(dt["name"])
    except ApiError:  # a role without registry.read sees the form refused anyway
        pass
    return options


async def _type_kept(client: ApiClient, device: str, dtype: str) -> str | None:
    """A warning when the device exists already with another type (the registry keeps a
    device's type: its stored signals follow from it)."""
    try:
        existing = await client.get(f"/devices/{device}")
    except ApiError as exc:
        if exc.status == 404:
            return None  # the platform registers it with the type on save
        raise
    if existing.get("device_type") != dtype:
        return t("gateways.type_kept", device=device, type=existing.get("device_type") or "—")
    return None


@ui.page("/gateways/{name}")
async def gateway_page(name: str) -> RedirectResponse | None:
    if (to_login := require_login()) is not None:
        return to_login
    client = api()
    state: dict[str, Any] = {"config": {"version": 0, "connectors": []}, "picked": []}
    with frame("gateways.gateway_title"):
        ui.label(name).classes("text-xl").props('data-testid="gateway-name"')
        sync = ui.label("").props('role="status" aria-live="polite" data-testid="sync"')
        notice = ui.label("").props('role="alert" data-testid="notice"').classes("text-red-800")
        done = ui.label("").props('role="status" data-testid="done"').classes("text-green-800")

        ui.label(t("gateways.devices")).classes("text-lg")
        devices = (
            ui.table(
                columns=[
                    {"name": "device", "label": t("gateways.device"), "field": "device"},
                    {"name": "protocol", "label": t("gateways.protocol"), "field": "protocol"},
                    {"name": "address", "label": t("gateways.where"), "field": "address"},
                    {"name": "signals", "label": t("gateways.signals"), "field": "signals"},
                    {"name": "type", "label": t("gateways.device_type"), "field": "device_type"},
                    {"name": "connector", "label": t("gateways.connector"), "field": "connector"},
                    {"name": "actions", "label": t("gateways.actions"), "field": "device"},
                ],
                rows=[],
                row_key="device",
            )
            .props(f'dense data-testid="devices" aria-label="{t("gateways.devices")}"')
            .classes("w-full")
        )
        devices.add_slot(
            "body-cell-actions",
            f"""
            <q-td :props="props">
              <q-btn dense flat color="negative" label="{t("gateways.remove")}"
                :aria-label="'{t("gateways.remove")} ' + props.row.device"
                :data-testid="'remove-' + props.row.device"
                @click="$parent.$emit('remove', props.row)" />
            </q-td>
            """,
        )

        def show_sync(cfg: dict[str, Any]) -> None:
            text = sync_text(
                cfg.get("sync"), cfg.get("version"), cfg.get("applied_version"), cfg.get("error")
            )
            if sync.text != text:
                sync.text = text
                sync.classes(replace=f"text-{SYNC_COLOURS.get(str(cfg.get('sync')), 'grey')}-800")

        async def load() -> bool:
            try:
                cfg = await client.get(f"/gateways/{name}/config")
            except ApiError as exc:
                notice.text = _refused(exc)
                return False
            state["config"] = cfg
            rows = devices_of(cfg.get("connectors") or [])
            if rows != devices.rows:
                devices.rows = rows
                devices.update()
            show_sync(cfg)
            return True

        async def put(connectors: list[dict[str, Any]]) -> dict[str, Any]:
            body = {"connectors": connectors, "expected_version": state["config"]["version"]}
            answer: dict[str, Any] = await client.put(f"/gateways/{name}/config", body)
            state["config"] = {**state["config"], **answer}
            await load()
            return answer

        # ---- remove, with confirmation ----
        def confirm_remove(row: dict[str, Any]) -> None:
            device = str(row["device"])
            with ui.dialog() as dialog, ui.card():
                ui.label(t("gateways.remove_confirm", device=device, gateway=name))

                async def ok() -> None:
                    dialog.close()
                    notice.text = done.text = ""
                    if not await load():
                        return
                    connectors = remove_device(state["config"].get("connectors") or [], device)
                    try:
                        await put(connectors)
                    except ApiError as exc:
                        await load()
                        notice.text = t("gateways.conflict") if exc.status == 409 else _refused(exc)
                        return
                    done.text = t("gateways.removed", device=device)

                with ui.row():
                    ui.button(t("gateways.remove"), on_click=ok).props(
                        'color=negative autofocus data-testid="remove-ok"'
                    )
                    ui.button(t("app.cancel"), on_click=dialog.close).props("flat")
            dialog.open()

        devices.on("remove", lambda e: confirm_remove(e.args))

        # ---- add a device ----
        ui.label(t("gateways.add")).classes("text-lg")
        types = await _device_types(client)
        with ui.card().classes("w-full gap-2").props(f'aria-label="{t("gateways.add")}"'):
            with ui.row().classes("items-center gap-4"):
                protocol = ui.toggle(
                    {"modbus": "Modbus TCP", "opcua": "OPC UA"}, value="modbus"
                ).props(f'data-testid="protocol" aria-label="{t("gateways.protocol")}"')
                dev_name = (
                    ui.input(t("gateways.device_name"))
                    .props('data-testid="device-name"')
                    .classes("w-56")
                )
                dtype = (
                    ui.select(types, value="", label=t("gateways.device_type"))
                    .props('data-testid="device-type"')
                    .classes("w-56")
                )
            modbus = ui.column().classes("gap-2")
            with modbus, ui.row().classes("items-center gap-4"):
                host = ui.input(t("gateways.host")).props('data-testid="host"').classes("w-56")
                port = (
                    ui.number(t("gateways.port"), value=502, min=1, max=65535, precision=0)
                    .props('data-testid="port"')
                    .classes("w-28")
                )
                unit = (
                    ui.number(t("gateways.unit"), value=1, min=0, max=255, precision=0)
                    .props('data-testid="unit"')
                    .classes("w-28")
                )
                period = (
                    ui.number(t("gateways.period"), value=1.0, min=0.01)
                    .props('data-testid="period"')
                    .classes("w-32")
                )
            with modbus:
                ui.label(t("gateways.registers")).classes("font-bold")
                reg_box = ui.column().classes("gap-1").props('data-testid="registers"')
            registers: list[_Register] = []

            def add_register() -> None:
                registers.append(_Register(reg_box, len(registers), drop_register))

            def drop_register(r: _Register) -> None:
                registers.remove(r)
                reg_box.remove(r.row)

            with modbus:
                ui.button(t("gateways.add_register"), icon="add", on_click=add_register).props(
                    'flat data-testid="add-register"'
                )
            add_register()

            opcua = ui.column().classes("gap-2 w-full")
            with opcua:
                with ui.row().classes("items-center gap-4"):
                    endpoint = (
                        ui.input(t("gateways.endpoint"), placeholder="opc.tcp://host:4840")
                        .props('data-testid="endpoint"')
                        .classes("w-96")
                    )
                    browse_button = ui.button(t("gateways.browse"), icon="travel_explore").props(
                        'data-testid="browse"'
                    )
                browse_state = ui.label("").props('role="status" data-testid="browse-state"')
                tree = (
                    ui.tree([], tick_strategy="leaf")
                    .props(f'data-testid="browse-tree" aria-label="{t("gateways.browse_tree")}"')
                    .classes("w-full")
                )
                picked_label = ui.label("").props('data-testid="picked"')

            def on_tick(e: Any) -> None:
                ticked = {str(v) for v in e.value or []}
                state["picked"] = [n for n in state.get("nodes", []) if n["node_id"] in ticked]
                picked_label.text = t(
                    "gateways.picked",
                    n=len(state["picked"]),
                    names=", ".join(s["signal"] for s in signals_for(state["picked"])) or "—",
                )

            tree.on_tick(on_tick)

            def show_protocol() -> None:
                modbus.visible = protocol.value == "modbus"
                opcua.visible = protocol.value == "opcua"

            protocol.on_value_change(lambda _: show_protocol())
            show_protocol()

            async def browse() -> None:
                url = str(endpoint.value or "").strip()
                _unmark(endpoint)
                if not url.startswith("opc.tcp://"):
                    _mark(endpoint, t("gateways.need_endpoint"))
                    return
                browse_button.disable()
                try:
                    await run_browse(url)
                finally:
                    browse_button.enable()

            async def run_browse(url: str) -> None:
                browse_state.text = t("gateways.browsing")
                try:
                    req = await client.post(
                        f"/gateways/{name}/browse", {"endpoint": url, "root": None, "max_depth": 4}
                    )
                    deadline = time.monotonic() + BROWSE_WAIT_S
                    while True:
                        res = await client.get(f"/gateways/{name}/browse/{req['id']}")
                        if res.get("state") != "pending":
                            break
                        if time.monotonic() > deadline:
                            browse_state.text = t("gateways.browse_timeout")
                            return
                        await asyncio.sleep(BROWSE_POLL_S)
                except ApiError as exc:
                    browse_state.text = _refused(exc)
                    return
                if res.get("state") == "error":
                    browse_state.text = t("gateways.browse_failed", reason=res.get("error") or "?")
                    return
                state["nodes"] = list(res.get("nodes") or [])
                state["picked"] = []
                tree.props["ticked"] = []
                tree.props["nodes"] = tree_of(state["nodes"])
                tree.update()
                tree.expand()
                browse_state.text = t("gateways.browsed", n=len(state["nodes"]))
                picked_label.text = ""

            browse_button.on_click(browse)

            # ---- save ----
            common = {"name": dev_name, "device_type": dtype}
            fields = {
                "host": host,
                "port": port,
                "unit_id": unit,
                "period_s": period,
                "endpoint": endpoint,
                "name": dev_name,
                "device_type": dtype,
            }

            def clear_errors() -> None:
                notice.text = done.text = ""
                for el in [*common.values(), *fields.values()]:
                    _unmark(el)
                for r in registers:
                    r.problem.text = ""
                    for el in r.controls().values():
                        _unmark(el)

            def show_error(location: str | None, message: str, index: int) -> None:
                place = form_field(location, index)
                # The API's message names the place already ("connectors[0]...: ...").
                text = (
                    message
                    if not location or "connectors[" in message
                    else f"{location}: {message}"
                )
                if place is not None:
                    what, row, attr = place
                    if what == "points" and row is not None and row < len(registers):
                        ctl = registers[row].controls()
                        _mark(ctl.get(attr) or ctl["address"], "")
                        registers[row].problem.text = _without_place(text)
                        return
                    if what == "nodes":
                        picked_label.text = t("app.error", reason=text)
                        return
                    if what in fields:
                        _mark(fields[what], _without_place(text))
                        return
                notice.text = t("app.error", reason=text)

            def device_section() -> tuple[dict[str, Any], Any] | None:
                """The device from the form, and how to merge it; None when the form itself
                is incomplete (the fields that are missing are marked)."""
                device = str(dev_name.value or "").strip()
                ok = True
                if not device:
                    _mark(dev_name, t("gateways.required"))
                    ok = False
                if protocol.value == "modbus":
                    if not str(host.value or "").strip():
                        _mark(host, t("gateways.required"))
                        ok = False
                    if port.value is None:
                        _mark(port, t("gateways.required"))
                        ok = False
                    if not registers:
                        notice.text = t("gateways.need_register")
                        ok = False
                    for r in registers:
                        if not str(r.name.value or "").strip():
                            _mark(r.name, t("gateways.required"))
                            ok = False
                        if r.address.value is None:
                            _mark(r.address, t("gateways.required"))
                            ok = False
                    if not ok:
                        return None
                    section: dict[str, Any] = {
                        "name": device,
                        "unit_id": int(unit.value if unit.value is not None else 1),
                        "points": [r.point() for r in registers],
                    }
                    if period.value is not None:
                        section["period_s"] = float(period.value)
                    where = ("modbus", str(host.value).strip(), int(port.value))
                    return section, where
                url = str(endpoint.value or "").strip()
                if not url:
                    _mark(endpoint, t("gateways.required"))
                    ok = False
                if not state["picked"]:
                    picked_label.text = t("gateways.need_nodes")
                    ok = False
                if not ok:
                    return None
                return {"name": device, "nodes": signals_for(state["picked"])}, ("opcua", url)

            async def save() -> None:
                clear_errors()
                built = device_section()
                if built is None:
                    return
                section, where = built
                device = str(section["name"])
                warning = None
                if dtype.value:
                    section["device_type"] = str(dtype.value)
                    try:
                        warning = await _type_kept(client, device, str(dtype.value))
                    except ApiError as exc:
                        _mark(dtype, _refused(exc))
                        return
                if not await load():  # merge into what is stored now, not what was shown
                    return
                current = state["config"].get("connectors") or []
                if where[0] == "modbus":
                    connectors, index = merge_modbus(current, where[1], where[2], section)
                else:
                    connectors, index = merge_opcua(current, where[1], section)
                try:
                    answer = await put(connectors)
                except ApiError as exc:
                    if exc.status == 409:
                        await load()
                        notice.text = t("gateways.conflict")
                    else:
                        show_error(exc.field, exc.message, index)
                    return
                done.text = t("gateways.saved", device=device, version=answer.get("version"))
                if warning:
                    notice.text = warning

            ui.button(t("gateways.save"), icon="save", on_click=save).props(
                'color=primary data-testid="save"'
            )

        await load()
        ui.timer(REFRESH_S, load)
    return None
