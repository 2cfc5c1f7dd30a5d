"""Device onboarding end to end: the console's Gateways pages in headless Chromium against the
session's `shopfloor demo`, a real gateway process (`shopfloor edge run` with `remote:`), a
real pymodbus server and a real asyncua server (the connectors' own simulators, as processes).

The merge rules of the page (how a device from the form goes into the gateway's connector
list) are checked first without a browser, against the gateway's own parser.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shopfloor.edge.remote import validate_remote
from shopfloor.ui.pages.gateways import (
    devices_of,
    form_field,
    merge_modbus,
    merge_opcua,
    remove_device,
    signals_for,
    tree_of,
)
from tests.services import free_port
from tests.ui.conftest import Demo, login, shot

GATEWAY = "gw-e2e"
DTYPE = "gw-meter"
METER = "meter-e2e"
OPC = "opc-e2e"


def _point(name: str, address: int, table: str = "holding") -> dict[str, Any]:
    return {"name": name, "table": table, "address": address, "type": "uint16"}


def _parse(connectors: list[dict[str, Any]]) -> list[str]:
    # what the platform validates a PUT with, and the gateway what it got
    return [c.name for c in validate_remote("g", connectors)]


# ---------------------------------------------------------------------------------------------
# The page's configuration rules, without a browser
# ---------------------------------------------------------------------------------------------


def test_devices_merge_into_sections_the_gateway_parser_accepts() -> None:
    a = {"name": "m1", "unit_id": 1, "points": [_point("t", 0)], "device_type": "meter"}
    b = {"name": "m2", "unit_id": 2, "points": [_point("t", 1)]}
    cfg, i = merge_modbus([], "10.0.0.5", 502, a)
    assert i == 0
    assert cfg[0]["name"] == "modbus-m1"
    # a second unit behind the same Modbus TCP gateway shares its connection (one socket)
    cfg, i = merge_modbus(cfg, "10.0.0.5", 502, b)
    assert i == 0
    assert len(cfg) == 1
    assert [d["name"] for d in cfg[0]["connections"][0]["devices"]] == ["m1", "m2"]
    # another host: a connector of its own; saving m1 again replaces it (moves it here)
    cfg, i = merge_modbus(cfg, "10.0.0.6", 502, {**a, "points": [_point("u", 3)]})
    assert i == 1
    assert [r["device"] for r in devices_of(cfg)] == ["m2", "m1"]
    cfg, i = merge_opcua(cfg, "opc.tcp://plc:4840", {"name": "o1", "nodes": [{"node_id": "ns=2;i=1", "signal": "s"}]})  # fmt: skip
    cfg, j = merge_opcua(cfg, "opc.tcp://plc:4840", {"name": "o2", "nodes": [{"node_id": "ns=2;i=2", "signal": "s"}]})  # fmt: skip
    assert i == j == 2
    assert len(cfg[2]["devices"]) == 2
    assert _parse(cfg) == ["modbus-m1", "modbus-m1-2", "opcua-o1"]
    rows = {r["device"]: r for r in devices_of(cfg)}
    assert rows["m1"]["address"] == "10.0.0.6:502 · unit 1"
    assert rows["o2"]["protocol"] == "OPC UA"
    # removing the last device of a connection or connector removes them too
    left = remove_device(remove_device(cfg, "m1"), "o1")
    assert [r["device"] for r in devices_of(left)] == ["m2", "o2"]
    assert _parse(left) == ["modbus-m1", "opcua-o1"]
    assert devices_of(remove_device(left, "m2")) == devices_of(left)[1:]
    assert remove_device(cfg, "nothing") == cfg


def test_api_error_locations_find_the_form_control() -> None:
    where = "connectors[2].connections[0].devices[0].points[1].address"
    assert form_field(where, 2) == ("points", 1, "address")
    assert form_field(where, 1) is None  # another connector's error: not the form's
    assert form_field("connectors.2.connections.0.port", 2) == ("port", None, "")
    assert form_field("connectors[0].endpoint", 0) == ("endpoint", None, "")
    assert form_field("connectors[0].devices[0].nodes[0].node_id", 0) == ("nodes", 0, "node_id")
    assert form_field("expected_version", 0) is None


def test_a_browse_result_becomes_a_tree_and_unique_signal_names() -> None:
    nodes = [
        {"node_id": "ns=2;s=a.x", "browse_path": "Plant/a/x", "name": "x", "data_type": "Double"},
        {"node_id": "ns=2;s=b.x", "browse_path": "Plant/b/x", "name": "x", "data_type": "Int32"},
    ]
    tree = tree_of(nodes)
    assert [n["label"] for n in tree] == ["Plant"]
    assert [n["label"] for n in tree[0]["children"]] == ["a", "b"]
    assert tree[0]["children"][1]["children"] == [{"id": "ns=2;s=b.x", "label": "x (Int32)"}]
    assert [s["signal"] for s in signals_for(nodes)] == ["x", "x_2"]


# ---------------------------------------------------------------------------------------------
# The real thing: gateway process, Modbus and OPC UA servers, browser
# ---------------------------------------------------------------------------------------------


@dataclass
class Rig:
    modbus_port: int
    opcua_port: int
    gateway_log: Path


def _ready(proc: subprocess.Popen[str], what: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), f"{what} did not start: {line!r}"


def _post(demo: Demo, path: str, body: Any) -> httpx.Response:
    return httpx.post(
        f"{demo.url}/api/v1{path}", json=body, headers={"X-API-Key": demo.key}, timeout=30
    )


@pytest.fixture(scope="module")
def rig(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    work = tmp_path_factory.mktemp("gateway")
    py = sys.executable
    procs: list[subprocess.Popen[Any]] = []
    try:
        mport, oport = free_port(), free_port()
        modbus = subprocess.Popen(
            [py, "-m", "shopfloor.edge.connectors.modbus.simserver", "--port", str(mport),
             "--units", "1", "--size", "100", "--fill"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(modbus)
        opcua = subprocess.Popen(
            [py, "-m", "shopfloor.edge.connectors.opcua.simserver", "--port", str(oport),
             "--devices", "1", "--per-device", "3", "--period", "0.5"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        procs.append(opcua)
        _ready(modbus, "the Modbus server")
        _ready(opcua, "the OPC UA server")
        # The platform side a person sets up once: the gateway's device, a device type.
        r = _post(demo, "/devices", {"name": GATEWAY})
        assert r.status_code in (201, 409), r.text
        r = httpx.put(
            f"{demo.url}/api/v1/devices/{GATEWAY}/gateway",
            json={"owns": []},
            headers={"X-API-Key": demo.key},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        signals = [{"name": "volts", "unit": "V"}, {"name": "amps", "unit": "A"}]
        r = _post(demo, "/device-types", {"name": DTYPE, "signals": signals})
        assert r.status_code in (201, 409), r.text
        config = {
            "name": GATEWAY,
            "data_dir": str(work / "edge-data"),
            "uplink": {"type": "http", "url": demo.url, "api_key_file": str(demo.data / "demo-api.key")},
            "forwarder": {"retry_initial": "0.2s", "retry_max": "1s"},
            "remote": {"enabled": True, "gateway": GATEWAY, "poll_s": 5, "retry_s": 0.5},
        }  # fmt: skip
        (work / "edge.yaml").write_text(yaml.safe_dump(config))
        log = work / "gateway.log"
        with log.open("wb") as out:
            gw = subprocess.Popen(
                [py, "-m", "shopfloor.cli.main", "edge", "run", "--config", str(work / "edge.yaml")],
                stdout=out, stderr=subprocess.STDOUT, cwd=work,
            )  # fmt: skip
        procs.append(gw)
        yield Rig(mport, oport, log)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            if p.stdout is not None:
                p.stdout.close()


RECORD_SYNC = """() => {
  window.__syncs = [];
  const seen = () => {
    const el = document.querySelector('[data-testid=sync]');
    const text = el ? el.innerText : '';
    if (window.__syncs[window.__syncs.length - 1] !== text) window.__syncs.push(text);
  };
  new MutationObserver(seen).observe(document.body,
    {childList: true, subtree: true, characterData: true});
}"""


def _sync_of(page: Any) -> str:
    return str(page.get_by_test_id("sync").inner_text())


def _wait_in_sync(page: Any, version: int, rig: Rig) -> None:
    try:
        page.wait_for_function(
            "(v) => (document.querySelector('[data-testid=sync]') || {}).innerText"
            " === `In sync (version ${v})`",
            arg=version,
            timeout=30_000,
        )
    except Exception:
        raise AssertionError(
            f"not in sync: {_sync_of(page)}\n{rig.gateway_log.read_text()}"
        ) from None


def _choose(page: Any, label: str, option: str) -> None:
    page.get_by_label(label, exact=True).click()
    page.get_by_role("option", name=option, exact=True).click()


def _config(demo: Demo) -> dict[str, Any]:
    cfg: dict[str, Any] = demo.api(f"/gateways/{GATEWAY}/config")
    return cfg


def test_onboard_a_modbus_and_an_opcua_device_from_the_browser(
    demo: Demo, browser: Any, rig: Rig
) -> None:
    started = time.monotonic()
    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    login(page, demo)
    page.get_by_test_id("nav-gateways").click()
    page.wait_for_url("**/ui/gateways")
    # the gateway process has polled: it is listed, with its sync state
    link = page.get_by_test_id(f"gateway-{GATEWAY}")
    link.wait_for(timeout=30_000)
    assert page.get_by_test_id(f"sync-{GATEWAY}").inner_text() != ""
    shot(page, "gateways-01-list")
    # The list refreshes in place: a row updated under the keyboard focus keeps it.
    link.focus()
    row = page.locator("[data-testid=gateways] [role=row]", has_text=GATEWAY)
    before = row.inner_text()
    page.wait_for_function(
        "([name, before]) => [...document.querySelectorAll('[data-testid=gateways] [role=row]')]"
        ".some(r => r.innerText.includes(name) && r.innerText !== before)",
        arg=[GATEWAY, before],
        timeout=20_000,
    )  # the gateway's heartbeat moved last_seen
    focused = page.evaluate("document.activeElement.getAttribute('data-testid')")
    assert focused == f"gateway-{GATEWAY}"
    page.keyboard.press("Enter")  # the keyboard opens the gateway
    page.wait_for_url(f"**/ui/gateways/{GATEWAY}")
    page.get_by_test_id("sync").wait_for()
    base = int(_config(demo)["version"])

    # --- a Modbus TCP device with two registers and a device type ---
    page.get_by_label("Device name", exact=True).fill(METER)
    _choose(page, "Device type", DTYPE)
    page.get_by_label("Host", exact=True).fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(str(rig.modbus_port))
    page.get_by_label("Unit id", exact=True).fill("1")
    page.get_by_label("Poll period (s)", exact=True).fill("0.5")
    page.get_by_label("Register 1: Address").fill("3")
    page.get_by_label("Register 1: Signal name").fill("volts")
    page.get_by_label("Register 1: Scale").fill("0.5")
    page.get_by_test_id("add-register").click()
    page.get_by_label("Register 2: Address").fill("4")
    _choose(page, "Register 2: Kind", "input")
    page.get_by_label("Register 2: Signal name").fill("amps")
    shot(page, "gateways-02-modbus-form")
    page.evaluate(RECORD_SYNC)
    page.get_by_test_id("save").click()
    page.wait_for_selector(f"text=Device {METER} saved as configuration version {base + 1}")
    _wait_in_sync(page, base + 1, rig)
    seen = page.evaluate("window.__syncs")
    assert any(s.startswith(f"Pending: version {base + 1}") for s in seen), seen
    assert page.locator("[data-testid=devices] tr", has_text=METER).count() == 1
    shot(page, "gateways-03-modbus-in-sync")
    # the device type was applied; the gateway's readings arrive: holding 3 holds 1*256+3
    # on the simulator (scaled 0.5), input 4 holds 260
    assert demo.api(f"/devices/{METER}")["device_type"] == DTYPE
    page.goto(f"{demo.url}/ui/machine/{METER}")
    page.wait_for_function(
        "() => { const rows = [...document.querySelectorAll('[data-testid=live] tr')]"
        ".map(r => r.innerText);"
        " return rows.some(r => r.includes('volts') && r.includes('129.5'))"
        " && rows.some(r => r.includes('amps') && r.includes('260')); }",
        timeout=30_000,
    )
    shot(page, "gateways-04-live-value")

    # --- an OPC UA device: browse the server through the gateway, pick two nodes ---
    page.goto(f"{demo.url}/ui/gateways/{GATEWAY}")
    page.get_by_test_id("protocol").get_by_text("OPC UA", exact=True).click()
    page.get_by_label("Device name", exact=True).fill(OPC)
    page.get_by_label("Endpoint URL", exact=True).fill(f"opc.tcp://127.0.0.1:{rig.opcua_port}")
    page.get_by_test_id("browse").click()
    page.wait_for_selector("text=variables found", timeout=40_000)
    tree = page.get_by_test_id("browse-tree")
    for var in ("v0000", "v0001"):
        header = tree.locator(".q-tree__node-header", has_text=f"{var} (Double)").first
        header.locator(".q-checkbox").click()
    page.wait_for_selector("text=2 signals picked: v0000, v0001")
    shot(page, "gateways-05-browse")
    page.evaluate(RECORD_SYNC)
    page.get_by_test_id("save").click()
    page.wait_for_selector(f"text=Device {OPC} saved as configuration version {base + 2}")
    _wait_in_sync(page, base + 2, rig)
    shot(page, "gateways-06-opcua-in-sync")
    deadline = time.monotonic() + 30
    while True:  # the two picked nodes deliver values
        points = demo.api("/latest", device=OPC)["points"]
        got = {p["signal"] for p in points if p.get("value") is not None}
        if got == {f"{OPC}/v0000", f"{OPC}/v0001"}:
            break
        assert time.monotonic() < deadline, (points, rig.gateway_log.read_text())
        time.sleep(0.5)

    # --- remove the OPC UA device again, with confirmation ---
    page.get_by_test_id(f"remove-{OPC}").click()
    page.get_by_test_id("remove-ok").click()
    page.wait_for_selector(f"text=Device {OPC} removed")
    _wait_in_sync(page, base + 3, rig)
    assert page.locator("[data-testid=devices] tr", has_text=OPC).count() == 0
    assert [r["device"] for r in devices_of(_config(demo)["connectors"])] == [METER]
    shot(page, "gateways-07-removed")
    page.close()
    print(f"onboarding test: {time.monotonic() - started:.1f} s")


def test_a_refused_config_is_shown_at_the_field_and_a_lost_update_reloads(
    demo: Demo, browser: Any, rig: Rig
) -> None:
    page = browser.new_page(viewport={"width": 1500, "height": 1200})
    login(page, demo)
    page.goto(f"{demo.url}/ui/gateways/{GATEWAY}")
    page.get_by_test_id("sync").wait_for()
    page.get_by_label("Device name", exact=True).fill("bad-meter")
    page.get_by_label("Host", exact=True).fill("127.0.0.1")
    page.get_by_label("Port", exact=True).fill(str(rig.modbus_port))
    page.get_by_label("Unit id", exact=True).fill("2")  # unit 1 there is the meter's
    page.get_by_label("Register 1: Signal name").fill("x")
    # a float64 takes 4 registers: from 65534 it runs past the last address, 65535 (the
    # form's own limits cannot tell; the gateway's parser can)
    page.get_by_label("Register 1: Address").fill("65534")
    _choose(page, "Register 1: Data type", "float64")
    before = _config(demo)["version"]
    earlier = [r["device"] for r in devices_of(_config(demo)["connectors"])]
    page.get_by_test_id("save").click()
    # the gateway parser's message, at the register's address field
    error = page.locator(".q-field--error", has=page.get_by_label("Register 1: Address"))
    try:
        error.wait_for(timeout=10_000)
    except Exception:
        shot(page, "gateways-08-refused-failed")
        raise
    problem = page.get_by_test_id("register-0-problem").inner_text()
    assert "runs past the last address 65535" in problem, problem
    assert _config(demo)["version"] == before  # nothing stored
    shot(page, "gateways-08-refused")
    # someone else saves meanwhile (the API, as another console would): this page's next
    # save merges into the newest version, so nothing is lost
    cfg = _config(demo)
    r = httpx.put(
        f"{demo.url}/api/v1/gateways/{GATEWAY}/config",
        json={"connectors": cfg["connectors"], "expected_version": cfg["version"]},
        headers={"X-API-Key": demo.key},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    stale = httpx.put(
        f"{demo.url}/api/v1/gateways/{GATEWAY}/config",
        json={"connectors": cfg["connectors"], "expected_version": cfg["version"]},
        headers={"X-API-Key": demo.key},
        timeout=30,
    )
    assert stale.status_code == 409, stale.text
    page.get_by_label("Register 1: Address").fill("7")
    page.get_by_test_id("save").click()
    page.wait_for_selector(f"text=Device bad-meter saved as configuration version {before + 2}")
    names = [r["device"] for r in devices_of(_config(demo)["connectors"])]
    assert names == [*earlier, "bad-meter"]
    _wait_in_sync(page, before + 2, rig)
    page.close()
