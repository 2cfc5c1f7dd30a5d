"""The gateway end to end against the real platform (a `shopfloor up` subprocess).

Points flow from a connector through the durable buffer and the HTTP uplink into the
historian; an outage in the middle loses and duplicates nothing; a gateway killed with SIGKILL
delivers after its restart everything that reached its buffer; a crashing connector is
restarted; commands reach the connector owning the device; status file and metrics tell it all.

The connector here is a small test-only one (a fixed grid of counters per device), so the
points the platform must hold are known exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.edge.config import HttpUplinkConfig, load_edge_config
from shopfloor.edge.connector import Connector, connector_class
from shopfloor.edge.model import Reading, WriteRequest, WriteResult
from shopfloor.edge.runtime import Gateway
from shopfloor.edge.status import read_status
from shopfloor.edge.uplinks.http import HttpUplink
from tests.services import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


# --- a test-only connector -------------------------------------------------------------------
class TickOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    devices: list[str]
    period_s: float = Field(0.02, gt=0)
    count: int | None = None  # readings per device, then idle; None: forever
    log_file: Path | None = None  # "device ts" per reading the buffer accepted
    crash_first: bool = False  # raise once, to test the supervisor


CRASHED: set[str] = set()


class TickConnector(Connector):
    """Each device yields ``count`` (k, k * 0.5, "RUN"/"STOP") readings on a time grid."""

    domain = "tick"
    config_model = TickOptions

    def __init__(self, name: str, config: BaseModel, sink: Any) -> None:
        super().__init__(name, config, sink)
        self.opts: TickOptions = config  # type: ignore[assignment]
        self.writes: list[WriteRequest] = []

    async def _device(self, device: str) -> None:
        log = self.opts.log_file.open("a") if self.opts.log_file else None
        try:
            k = 0
            while self.opts.count is None or k < self.opts.count:
                ts = time.time_ns()
                text = ("RUN" if k % 2 else "STOP",)
                reading = Reading.at(
                    device,
                    ts,
                    ("count", "half", "mode"),
                    [k, k * 0.5, np.nan],
                    text=(None, None, *text),
                )
                await self.sink(reading)
                if log:
                    log.write(f"{device} {ts}\n")
                    log.flush()
                k += 1
                await asyncio.sleep(self.opts.period_s)
            await asyncio.Event().wait()
        finally:
            if log:
                log.close()

    async def run(self) -> None:
        if self.opts.crash_first and self.name not in CRASHED:
            CRASHED.add(self.name)
            await asyncio.sleep(0.05)
            raise RuntimeError("simulated crash")
        await asyncio.gather(*(self._device(d) for d in self.opts.devices))

    async def write(self, request: WriteRequest) -> WriteResult:
        self.writes.append(request)
        return WriteResult(request.id, True, f"written by {self.name}", read_back=request.value)

    def status(self) -> dict[str, Any]:
        return {"devices": {d: {"connected": True, "failed_total": 0} for d in self.opts.devices}}


def lookup(domain: str) -> type[Connector]:
    return TickConnector if domain == "tick" else connector_class(domain)


# --- the real platform -----------------------------------------------------------------------
@dataclass
class PlatformProc:
    data_dir: Path
    port: int
    key: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "shopfloor.cli.main", "up", "--data-dir", str(self.data_dir)]
        with (self.data_dir / "server.log").open("ab") as out:
            self.proc = subprocess.Popen([*cmd, "--port", str(self.port)], stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise AssertionError(
            f"platform did not start: {(self.data_dir / 'server.log').read_text()}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def health(self) -> dict[str, Any]:
        doc: dict[str, Any] = httpx.get(f"{self.url}/health", timeout=5).json()
        return doc

    def points(self, signals: Sequence[str], start_ns: int) -> dict[str, list[tuple[int, Any]]]:
        params: list[tuple[str, str | int | float | bool | None]] = [("signal", s) for s in signals]
        params += [("start", str(start_ns // 1_000_000 - 1)), ("end", "now"), ("time_format", "ns")]
        params += [("limit", 1_000_000)]
        r = httpx.get(
            f"{self.url}/api/v1/points",
            params=params,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        out = {}
        for series in r.json()["series"]:
            text = series.get("text") or [None] * len(series["ts"])
            values = [t if t is not None else v for v, t in zip(series["value"], text, strict=True)]
            out[series["signal"]] = list(zip(series["ts"], values, strict=True))
        return out


def new_platform(data_dir: Path) -> PlatformProc:
    from shopfloor.api.platform import Platform  # the platform only in the test process
    from shopfloor.core.config import Settings

    data_dir.mkdir(parents=True, exist_ok=True)
    platform = Platform(Settings(data_dir=data_dir))
    _, key = platform.registry.create_tenant("acme")
    platform.close()
    return PlatformProc(data_dir, free_port(), key)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProc]:
    p = new_platform(tmp_path_factory.mktemp("platform"))
    p.start()
    yield p
    p.stop()


# --- a switchable TCP proxy: "the network to the platform" -----------------------------------
class Proxy:
    """Forwards 127.0.0.1:port to the platform; :meth:`down` makes it unreachable.

    Going down refuses new connections and closes open ones only between requests (a request
    the platform received is answered first), so an outage never leaves a batch stored but
    unacknowledged: what the test counts as a duplicate would be a real one.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.server: asyncio.Server | None = None
        self.closing = False
        self.conns: set[asyncio.Task[None]] = set()

    async def up(self) -> None:
        self.closing = False
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def down(self) -> None:
        self.closing = True
        if self.server is not None:
            self.server.close()
            self.server = None
        deadline = time.monotonic() + 10
        while self.conns and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded poll
            await asyncio.sleep(0.02)
        assert not self.conns, "proxy connections did not close"

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.conns.add(task)
        sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)
        state = {"awaiting": False, "last": time.monotonic()}

        async def upstream() -> None:
            while data := await cr.read(65536):
                if self.closing and not state["awaiting"]:
                    return  # a new request after going down: never reaches the platform
                state["awaiting"] = True
                sw.write(data)
                await sw.drain()

        async def downstream() -> None:
            while data := await sr.read(65536):
                cw.write(data)
                await cw.drain()
                state["awaiting"], state["last"] = False, time.monotonic()

        async def closer() -> None:
            # polls the time since the last answer too, which no event signals
            while not (  # noqa: ASYNC110
                self.closing and not state["awaiting"] and time.monotonic() - state["last"] > 0.1
            ):
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(c()) for c in (upstream, downstream, closer)]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for w in (cw, sw):
                w.close()
            self.conns.discard(task)


class SpyUplink(HttpUplink):
    """The real HTTP uplink, remembering what it delivered and with which flag."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delivered: list[tuple[bool, list[Reading]]] = []

    async def send(self, readings: Sequence[Reading], *, historical: bool) -> None:
        await super().send(readings, historical=historical)
        self.delivered.append((historical, list(readings)))


def edge_yaml(tmp: Path, url: str, key: str, tick: dict[str, Any], **extra: Any) -> Path:
    doc = {
        "name": "test-gw",
        "data_dir": "edge-data",
        "buffer": {"max_bytes": "64MiB", "fsync": "always"},
        "forwarder": {"batch_points": 300, "retry_initial": 0.05, "retry_max": 0.2},
        "uplink": {"type": "http", "url": url, "api_key": key, "timeout": 5},
        "status": {"interval": 0.2, **extra.pop("status", {})},
        "connectors": [{"type": "tick", "name": "ticks", **tick}],
        **extra,
    }
    path = tmp / "edge.yaml"
    path.write_bytes(orjson.dumps(doc))  # JSON is YAML
    return path


async def until(cond: Any, within_s: float, what: str) -> None:
    deadline = time.monotonic() + within_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def expected_points(readings: Sequence[Reading]) -> set[tuple[str, int]]:
    return {
        (f"{r.device}/{s}", int(t))
        for r in readings
        for s, t in zip(r.signals, r.ts_ns, strict=True)
    }


# --- tests -----------------------------------------------------------------------------------
def test_outage_in_the_middle_every_point_arrives_once_and_in_order(
    platform: PlatformProc, tmp_path: Path
) -> None:
    devices = ["press-01", "press-02"]
    per_device = 150
    signals = [f"{d}/{s}" for d in devices for s in ("count", "half", "mode")]
    written_before = platform.health()["historian"]["points_written"]
    start_ns = time.time_ns()

    async def scenario() -> tuple[Gateway, SpyUplink, dict[str, Any]]:
        proxy = Proxy(platform.port)
        await proxy.up()
        path = edge_yaml(
            tmp_path,
            f"http://127.0.0.1:{proxy.port}",
            platform.key,
            {"devices": devices, "period_s": 0.02, "count": per_device},
            forwarder={"batch_points": 60, "retry_initial": 0.05, "retry_max": 0.2},
        )
        cfg = load_edge_config(path, lookup=lookup)
        assert isinstance(cfg.uplink, HttpUplinkConfig)
        uplink = SpyUplink(cfg.uplink, data_dir=cfg.data_dir)
        gw = Gateway(cfg, uplink=uplink)
        task = asyncio.create_task(gw.run())
        await until(lambda: gw.points_out > 100, 20, "first points delivered")
        assert uplink.connected
        await proxy.down()  # the platform becomes unreachable while the connector produces
        in_before = gw.points_in
        await until(
            lambda: gw.points_in > in_before + 150 and gw.send_failures >= 2, 20, "an outage"
        )
        assert not uplink.connected
        during = read_status(cfg.status_file)
        await proxy.up()
        await until(lambda: gw.points_in == per_device * 3 * len(devices), 30, "all readings")
        await until(lambda: gw.points_out == gw.points_in, 30, "the backlog drained")
        gw.request_stop()
        await asyncio.wait_for(task, 20)
        await proxy.down()
        return gw, uplink, during

    gw, uplink, during = asyncio.run(scenario())

    # the status file written during the outage showed it
    assert during["uplink"]["connected"] is False
    assert during["buffer"]["depth_points"] > 0
    assert during["uplink"]["send_failures"] >= 1
    # what the connector produced is exactly what the platform holds
    delivered = [r for _, batch in uplink.delivered for r in batch]
    sent = expected_points(delivered)
    assert len(sent) == per_device * 3 * len(devices)
    held = platform.points(signals, start_ns)
    stored = {(sig, int(ts)) for sig, pts in held.items() for ts, _ in pts}
    assert stored == sent
    # values and text came through as sent
    count = held["press-01/count"]
    assert [v for _, v in count] == [float(k) for k in range(per_device)]
    assert [v for _, v in held["press-01/mode"]][:3] == ["STOP", "RUN", "STOP"]
    # exactly once: the historian wrote each point one time, nothing twice
    written = platform.health()["historian"]["points_written"] - written_before
    assert written == len(sent)
    # in order per signal, across the outage
    by_signal: dict[str, list[int]] = {}
    for r in delivered:
        for s, t in zip(r.signals, r.ts_ns.tolist(), strict=True):
            by_signal.setdefault(f"{r.device}/{s}", []).append(t)
    assert all(ts == sorted(ts) for ts in by_signal.values())
    # what waited through the outage went as historical, live data before it not
    flags = [h for h, _ in uplink.delivered]
    assert flags[0] is False
    assert True in flags
    assert gw.send_failures >= 2


def test_killed_gateway_delivers_everything_its_buffer_accepted(
    platform: PlatformProc, tmp_path: Path
) -> None:
    """kill -9 while the platform is unreachable; after the restart every point arrives."""
    devices = ["oven-01"]
    log_file = tmp_path / "accepted.log"
    dead_port = free_port()  # nothing listens: an outage from the first second
    path = edge_yaml(
        tmp_path,
        f"http://127.0.0.1:{dead_port}",
        platform.key,
        {"devices": devices, "period_s": 0.01, "log_file": str(log_file)},
    )
    script = (
        "import asyncio, sys; sys.path.insert(0, sys.argv[2]);"
        "from test_runtime import lookup;"
        "from shopfloor.edge.config import load_edge_config;"
        "from shopfloor.edge.runtime import run_gateway;"
        "asyncio.run(run_gateway(load_edge_config(sys.argv[1], lookup=lookup)))"
    )
    cmd = [sys.executable, "-c", script, str(path), str(HERE)]
    start_ns = time.time_ns()
    err = (tmp_path / "gw.log").open("ab")
    gw = subprocess.Popen(cmd, cwd=ROOT, stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while (
            not log_file.exists() or log_file.stat().st_size < 8_000
        ) and time.monotonic() < deadline:
            assert gw.poll() is None, (tmp_path / "gw.log").read_text()
            time.sleep(0.05)
        os.kill(gw.pid, signal.SIGKILL)
        gw.wait(10)
    finally:
        if gw.poll() is None:
            gw.kill()
    accepted = {
        (d, int(t)) for d, t in (line.split() for line in log_file.read_text().splitlines())
    }
    assert len(accepted) > 200

    # second life: the platform reachable, the connector idle after a few more readings
    path = edge_yaml(
        tmp_path,
        platform.url,
        platform.key,
        {"devices": devices, "period_s": 0.01, "count": 5},
    )
    gw = subprocess.Popen(cmd, cwd=ROOT, stdout=err, stderr=err)
    status_file = tmp_path / "edge-data" / "status.json"
    try:
        deadline = time.monotonic() + 60
        doc: dict[str, Any] = {}
        while time.monotonic() < deadline:
            assert gw.poll() is None, (tmp_path / "gw.log").read_text()
            with contextlib.suppress(OSError, ValueError):
                doc = read_status(status_file)
                if (
                    doc["pid"] == gw.pid
                    and doc["buffer"]["depth_points"] == 0
                    and doc["points_out_total"] > 0
                ):
                    break
            time.sleep(0.1)
        else:
            raise AssertionError(f"backlog not delivered: {doc.get('buffer')}")
        gw.send_signal(signal.SIGTERM)  # a clean stop this time
        assert gw.wait(30) == 0
    finally:
        if gw.poll() is None:
            gw.kill()
        err.close()
    assert read_status(status_file)["state"] == "stopped"
    held = platform.points([f"{d}/count" for d in devices], start_ns)
    stored = {(sig.split("/")[0], int(ts)) for sig, pts in held.items() for ts, _ in pts}
    missing = accepted - stored
    assert not missing, f"{len(missing)} of {len(accepted)} accepted readings lost"


def test_crashing_connector_restarts_and_commands_reach_the_owner(
    platform: PlatformProc, tmp_path: Path
) -> None:
    async def scenario() -> None:
        path = edge_yaml(
            tmp_path,
            platform.url,
            platform.key,
            {"devices": ["robot-01", "robot-02"], "period_s": 0.05, "crash_first": True},
            status={"metrics_port": free_port()},
        )
        cfg = load_edge_config(path, lookup=lookup)
        cfg.connectors.append(cfg.connectors[0].model_copy())
        cfg.connectors[1].name = "other"
        cfg.connectors[1]._config = TickOptions(devices=["welder-01"], period_s=0.05)
        cfg.connectors[1]._cls = TickConnector
        gw = Gateway(cfg, restart_initial_s=0.1)
        task = asyncio.create_task(gw.run())
        await until(lambda: gw.slots[0].restarts == 1 and gw.slots[0].points_in > 0, 20, "restart")
        assert gw.slots[0].last_error == "RuntimeError: simulated crash"
        assert gw.slots[1].restarts == 0  # the other connector never noticed
        await until(lambda: gw.points_out > 30, 20, "points delivered")

        res = await gw.handle_command(WriteRequest("c1", "welder-01", "count", 7))
        assert (res.ok, res.message, res.read_back) == (True, "written by other", 7)
        res = await gw.handle_command(WriteRequest("c2", "robot-02", "count", 3))
        assert (res.ok, res.message) == (True, "written by ticks")
        owner = gw.slots[0].connector
        assert isinstance(owner, TickConnector)
        assert [w.id for w in owner.writes] == ["c2"]
        res = await gw.handle_command(WriteRequest("c3", "nobody", "count", 1))
        assert not res.ok
        assert "unknown device 'nobody'" in res.message
        assert gw.uplink.on_command == gw.handle_command  # commands from the uplink land here

        await asyncio.sleep(0.5)  # one more status period
        doc = read_status(cfg.status_file)
        port = cfg.status.metrics_port
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        gw.request_stop()
        await asyncio.wait_for(task, 20)

        assert doc["connectors"]["ticks"]["restarts"] == 1
        assert doc["connectors"]["ticks"]["devices"] == ["robot-01", "robot-02"]
        assert doc["uplink"]["connected"] is True
        assert doc["rates"]["points_in_per_s"] > 0
        lines = dict(
            line.rsplit(" ", 1) for line in metrics.splitlines() if not line.startswith("#")
        )
        assert int(lines["shopfloor_edge_points_in_total"]) >= doc["points_in_total"]
        assert lines['shopfloor_edge_connector_restarts_total{connector="ticks"}'] == "1"
        assert (
            lines['shopfloor_edge_device_failures_total{connector="other",device="welder-01"}']
            == "0"
        )
        assert "shopfloor_edge_buffer_oldest_age_seconds" in lines
        assert lines["shopfloor_edge_buffer_dropped_points_total"] == "0"

    asyncio.run(scenario())


def test_simulated_factory_through_the_gateway_into_the_historian(
    platform: PlatformProc, tmp_path: Path
) -> None:
    """The real simulator connector, found through its entry point, feeding the platform."""
    start_ns = time.time_ns()
    doc = {
        "name": "sim-gw",
        "uplink": {"type": "http", "url": platform.url, "api_key": platform.key},
        "connectors": [
            {"type": "simulator", "name": "factory", "period_s": 0.05, "lines": 1, "machines": 2}
        ],
    }
    path = tmp_path / "edge.yaml"
    path.write_bytes(orjson.dumps(doc))

    async def scenario() -> SpyUplink:
        cfg = load_edge_config(path)  # no test lookup: the installed connectors
        assert isinstance(cfg.uplink, HttpUplinkConfig)
        uplink = SpyUplink(cfg.uplink, data_dir=cfg.data_dir)
        gw = Gateway(cfg, uplink=uplink)
        task = asyncio.create_task(gw.run())
        await until(lambda: gw.slots[0].points_in > 1000 and gw.points_out > 0, 30, "data")
        gw.request_stop()
        await asyncio.wait_for(task, 20)
        assert gw.slots[0].restarts == 0
        return uplink

    uplink = asyncio.run(scenario())
    delivered = [r for _, batch in uplink.delivered for r in batch]
    assert len({r.device for r in delivered}) == 2
    good = {
        (f"{r.device}/{s}", int(t))
        for r in delivered
        for s, t, q, v in zip(r.signals, r.ts_ns, r.quality, r.values, strict=True)
        if q == 0 and not np.isnan(v)
    }
    signals = sorted({sig for sig, _ in good})
    held = platform.points(signals, start_ns)
    stored = {(sig, int(ts)) for sig, pts in held.items() for ts, _ in pts}
    assert good <= stored
    assert len(good) > 500
