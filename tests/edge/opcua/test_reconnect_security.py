"""Server restarts (killed process) and secured sessions with certificates and a login."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from shopfloor.core.quality import GOOD
from shopfloor.edge.connectors.opcua import OpcUaConfig, OpcUaConnector
from shopfloor.edge.connectors.opcua.connector import BAD_COMMUNICATION

from .conftest import CLIENT_URI, Collector, ServerProcess, make_cert, running_server
from .test_subscribe import plant_config

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def running(conn: OpcUaConnector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(conn.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def good_points(sink: Collector) -> dict[tuple[str, str], list[int]]:
    """(device, signal) -> source timestamps of its good points, in arrival order."""
    out: dict[tuple[str, str], list[int]] = {}
    for r in sink.readings:
        for s, t, q in zip(r.signals, r.ts_ns.tolist(), r.quality.tolist(), strict=True):
            if q == GOOD:
                out.setdefault((r.device, s), []).append(t)
    return out


async def test_reconnects_and_resubscribes_after_server_restart() -> None:
    srv = ServerProcess(["--devices", "5", "--per-device", "20", "--period", "0.5"])
    srv.start()
    try:
        cfg = plant_config(srv.url, 5, 20, reconnect_min_s=0.2, reconnect_max_s=1.0)
        sink = Collector()
        conn = OpcUaConnector("plc", cfg, sink)
        async with running(conn) as task:
            assert await sink.wait_for(lambda: conn.status()["items_reported"] == 100, 20)
            await asyncio.sleep(1.2)  # a few cycles of live data
            killed_ns = time.time_ns()
            srv.kill()
            assert await sink.wait_for(lambda: not conn.status()["connected"], 10)
            down = conn.status()
            await asyncio.sleep(1.0)  # the outage
            srv.start()
            up_ns = time.time_ns()
            after = lambda: {  # noqa: E731
                k
                for k, ts in good_points(sink).items()
                if max(ts) > up_ns - 5 * 10**9 and any(t > killed_ns for t in ts)
            }
            assert await sink.wait_for(lambda: len(after()) == 100, 20), len(after())
            assert not task.done()
            status = conn.status()
    finally:
        srv.stop()
    assert down["session_state"] in {"backoff", "connecting", "disconnected", "disconnecting"}
    assert down["last_error"]
    assert status["connected"] is True
    assert status["sessions"] == 2
    assert status["reconnect_attempts"] >= 1
    assert status["subscribed_items"] == 100
    # the loss marked every device bad once, with the gateway's clock
    bad = [r for r in sink.readings if (r.quality == BAD_COMMUNICATION).all()]
    assert {r.device for r in bad} == {f"dev{d:03d}" for d in range(5)}
    assert all(r.source_ts is False and np.isnan(r.values).all() for r in bad)
    # no gap beyond the outage: every item's first value after the restart follows its last
    # value before the kill by no more than the outage plus a reconnect and one server cycle
    outage_s = (up_ns - killed_ns) / 1e9
    for key, ts in good_points(sink).items():
        before = [t for t in ts if t <= killed_ns]
        later = [t for t in ts if t > killed_ns]
        assert before, key
        assert later, key
        gap_s = (min(later) - max(before)) / 1e9
        assert gap_s <= outage_s + 5.0, (key, gap_s, outage_s)
    # and nothing was delivered twice
    for key, ts in good_points(sink).items():
        assert len(ts) == len(set(ts)), key


async def test_hung_server_is_noticed_by_the_watchdog_and_recovered() -> None:
    # SIGSTOP freezes the server with its socket open: only the keep-alive probe can tell
    srv = ServerProcess(["--devices", "2", "--per-device", "5", "--period", "0.5"])
    srv.start()
    try:
        cfg = plant_config(
            srv.url, 2, 5, watchdog_s=1.0, request_timeout_s=1.5, reconnect_max_s=1.0
        )
        sink = Collector()
        conn = OpcUaConnector("plc", cfg, sink)
        async with running(conn):
            assert await sink.wait_for(lambda: conn.status()["items_reported"] == 10, 20)
            assert srv.proc is not None
            srv.proc.send_signal(signal.SIGSTOP)
            try:
                frozen = time.monotonic()
                assert await sink.wait_for(lambda: not conn.status()["connected"], 15)
                noticed_s = time.monotonic() - frozen
            finally:
                srv.proc.send_signal(signal.SIGCONT)
            resumed_ns = time.time_ns()
            assert await sink.wait_for(lambda: conn.status()["connected"], 20)
            n = len(sink.readings)
            assert await sink.wait_for(
                lambda: any(
                    r.ts_ns.min() > resumed_ns and (r.quality == GOOD).all()
                    for r in sink.readings[n:]
                ),
                10,
            )
            status = conn.status()
    finally:
        srv.stop()
    assert noticed_s < 10
    assert status["sessions"] >= 2


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    server = make_cert(folder, "server", "urn:freeopcua:python:server")
    client = make_cert(folder, "client", CLIENT_URI)
    return {
        "server_cert": server.cert,
        "server_key": server.key,
        "cert": client.cert,
        "key": client.key,
    }


@pytest.fixture(scope="module")
def secure_server(certs: dict[str, Path]) -> Iterator[ServerProcess]:
    args = ["--devices", "2", "--per-device", "5", "--period", "0.5", "--user", "operator:s3cret"]
    with running_server(
        *args, "--cert", str(certs["server_cert"]), "--key", str(certs["server_key"])
    ) as srv:
        yield srv


def secure_config(url: str, certs: dict[str, Path], mode: str, password: str) -> OpcUaConfig:
    base = plant_config(url, 2, 5).model_dump()
    base["security"] = {
        "policy": "Basic256Sha256",
        "mode": mode,
        "certificate": certs["cert"],
        "private_key": certs["key"],
    }
    base.update(username="operator", password=password, reconnect_min_s=0.5, reconnect_max_s=1.0)
    return OpcUaConfig.model_validate(base)


@pytest.mark.parametrize("mode", ["SignAndEncrypt", "Sign"])
async def test_basic256sha256_with_certificates_and_login(
    secure_server: ServerProcess, certs: dict[str, Path], mode: str
) -> None:
    sink = Collector()
    conn = OpcUaConnector("plc", secure_config(secure_server.url, certs, mode, "s3cret"), sink)
    async with running(conn):
        assert await sink.wait_for(lambda: conn.status()["items_reported"] == 10, 30)
        status = conn.status()
    assert status["connected"] is True
    assert status["last_error"] is None
    assert all(r.source_ts for r in sink.readings)


async def test_wrong_password_is_a_clear_status_not_a_crash(
    secure_server: ServerProcess, certs: dict[str, Path]
) -> None:
    sink = Collector()
    conn = OpcUaConnector(
        "plc", secure_config(secure_server.url, certs, "SignAndEncrypt", "wrong"), sink
    )
    async with running(conn) as task:
        assert await sink.wait_for(lambda: conn.status()["last_error"] is not None, 20)
        await asyncio.sleep(1.5)  # it keeps retrying (with backoff) instead of giving up
        status = conn.status()
        assert not task.done()
    assert status["connected"] is False
    assert "login refused: wrong username or password" in status["last_error"]
    assert sink.readings == []


async def test_unsecured_client_against_secured_server_says_why(
    secure_server: ServerProcess,
) -> None:
    cfg = plant_config(secure_server.url, 2, 5, username="operator", password="s3cret")
    conn = OpcUaConnector("plc", cfg, Collector())
    async with running(conn) as task:
        for _ in range(40):
            if conn.status()["last_error"]:
                break
            await asyncio.sleep(0.25)
        status = conn.status()
        assert not task.done()
    assert status["connected"] is False
    assert "no server endpoint matches the configured security" in status["last_error"]


def test_missing_certificate_file_named(tmp_path: Path) -> None:
    cfg = OpcUaConfig.model_validate(
        {
            "endpoint": "opc.tcp://127.0.0.1:1/x",
            "security": {
                "policy": "Basic256Sha256",
                "mode": "Sign",
                "certificate": tmp_path / "nope.der",
                "private_key": tmp_path / "nope.pem",
            },
            "devices": [{"name": "m", "nodes": [{"node_id": "i=1", "signal": "s"}]}],
        }
    )
    conn = OpcUaConnector("plc", cfg, Collector())

    async def once() -> str | None:
        task = asyncio.create_task(conn.run())
        for _ in range(40):
            if conn.status()["last_error"]:
                break
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return conn.status()["last_error"]

    error = asyncio.run(once())
    assert error is not None
    assert "nope.der" in error
    assert "does not exist" in error
