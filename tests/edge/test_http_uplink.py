"""The HTTP uplink against the real platform, and against a small HTTP peer that answers
whatever status code a case needs (the platform cannot be made to answer 429 on demand)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from shopfloor.core.quality import BAD, UNCERTAIN
from shopfloor.edge.config import HttpUplinkConfig
from shopfloor.edge.model import Reading, bad_reading
from shopfloor.edge.uplink import UplinkError
from shopfloor.edge.uplinks.http import HttpUplink, encode_batch
from tests.services import free_port


class Platform:
    def __init__(self, data_dir: Path) -> None:
        from shopfloor.api.platform import Platform as Real
        from shopfloor.core.config import Settings

        real = Real(Settings(data_dir=data_dir))
        _, self.key = real.registry.create_tenant("acme")
        real.close()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "shopfloor.cli.main", "up", "--data-dir", str(data_dir)]
        with (data_dir / "server.log").open("ab") as out:
            self.proc = subprocess.Popen([*cmd, "--port", str(self.port)], stdout=out, stderr=out)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"platform did not start: {(data_dir / 'server.log').read_text()}")

    def points(self, signal: str) -> dict[str, Any]:
        r = httpx.get(
            f"{self.url}/api/v1/points",
            params={"signal": signal, "start": "-1d", "end": "now", "time_format": "ns"},
            headers={"Authorization": f"Bearer {self.key}"},
        )
        assert r.status_code == 200, r.text
        series = r.json()["series"]
        return series[0] if series else {"ts": [], "value": [], "quality": []}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(tmp_path_factory.mktemp("platform"))
    yield p
    p.proc.terminate()
    p.proc.wait(20)


def config(url: str, key: str = "k", **kw: Any) -> HttpUplinkConfig:
    return HttpUplinkConfig(type="http", url=url, api_key=key, timeout=5, **kw)


def reading(device: str, ts: int, values: list[float], quality: int = 0) -> Reading:
    names = tuple(f"s{i}" for i in range(len(values)))
    return Reading.at(device, ts, names, values, quality)


def test_encoding_is_columnar_with_text_and_nulls() -> None:
    text = Reading.at("d1", 5, ("a", "mode"), [1.5, np.nan], text=(None, "RUN"))
    bad = bad_reading("d2", ("x",), 6)
    body, n = encode_batch([text, bad])
    doc = orjson.loads(body)
    assert n == 3
    assert doc == {
        "signal": ["d1/a", "d1/mode", "d2/x"],
        "ts": [5, 5, 6],
        "ts_unit": "ns",
        "value": [1.5, "RUN", None],
        "quality": [0, 0, BAD],
    }
    body, n = encode_batch([text, bad], drop_null=True)
    assert n == 2
    assert orjson.loads(body)["signal"] == ["d1/a", "d1/mode"]


def test_batches_reach_the_platform(platform: Platform, tmp_path: Path) -> None:
    now = time.time_ns()

    async def go() -> HttpUplink:
        up = HttpUplink(config(platform.url, platform.key), data_dir=tmp_path)
        await up.start()
        batch = [reading("mill-01", now + i * 1_000_000, [i, i * 2.0]) for i in range(50)]
        batch.append(reading("mill-01", now + 50_000_000, [50, 100.0], UNCERTAIN))
        await up.send(batch, historical=False)
        text = Reading.at("mill-01", now, ("mode",), [np.nan], text=("RUN",))
        await up.send([text], historical=True)
        assert up.connected
        await up.stop()
        return up

    up = asyncio.run(go())
    s0 = platform.points("mill-01/s0")
    assert s0["ts"] == [now + i * 1_000_000 for i in range(51)]
    assert s0["value"] == [float(i) for i in range(51)]
    assert s0["quality"][-1] in ("uncertain", UNCERTAIN)
    assert platform.points("mill-01/mode")["text"] == ["RUN"]
    assert up.stats["points_sent"] == 103
    assert not (tmp_path / "quarantine").exists()


def test_bad_points_of_a_failed_poll_do_not_block_good_ones(
    platform: Platform, tmp_path: Path
) -> None:
    """A failed poll's NaN/bad points go as null; a platform that refuses null gets the rest."""
    now = time.time_ns()

    async def go() -> HttpUplink:
        up = HttpUplink(config(platform.url, platform.key), data_dir=tmp_path)
        batch = [reading("lathe-01", now, [1.0]), bad_reading("lathe-01", ("s0",), now + 1000)]
        batch.append(reading("lathe-01", now + 2000, [3.0]))
        await up.send(batch, historical=False)
        await up.stop()
        return up

    up = asyncio.run(go())
    got = platform.points("lathe-01/s0")
    assert got["ts"][0] == now
    assert got["ts"][-1] == now + 2000
    assert got["value"][0] == 1.0
    assert got["value"][-1] == 3.0
    # The platform stores a bad point without a value, with its quality.
    assert got["ts"] == [now, now + 1000, now + 2000]
    assert got["value"][1] is None
    assert got["quality"][1] in ("bad", BAD)
    assert up.stats["quarantined_batches"] == 0


def test_refused_batch_goes_to_quarantine_and_counts_as_delivered(
    platform: Platform, tmp_path: Path
) -> None:
    now = time.time_ns()

    async def go() -> HttpUplink:
        up = HttpUplink(config(platform.url, platform.key), data_dir=tmp_path)
        await up.send([reading("saw-01", now, [1.0])], historical=False)  # s0 is numeric now
        poison = Reading.at("saw-01", now + 1000, ("s0",), [np.nan], text=("oops",))
        await up.send([poison], historical=False)  # returns: not retried forever
        await up.stop()
        return up

    up = asyncio.run(go())
    assert up.stats["quarantined_batches"] == 1
    bodies = sorted((tmp_path / "quarantine").glob("*[0-9].json"))
    errors = sorted((tmp_path / "quarantine").glob("*.error.json"))
    assert len(bodies) == 1
    assert len(errors) == 1
    assert orjson.loads(bodies[0].read_bytes())["value"] == ["oops"]
    meta = orjson.loads(errors[0].read_bytes())
    assert meta["status"] == 422
    assert meta["points"] == 1
    assert meta["error"]
    assert platform.points("saw-01/s0")["value"] == [1.0]


def test_wrong_key_is_retried_not_quarantined(platform: Platform, tmp_path: Path) -> None:
    async def go() -> HttpUplink:
        up = HttpUplink(config(platform.url, "not-the-key"), data_dir=tmp_path)
        with pytest.raises(UplinkError, match="401"):
            await up.send([reading("x", time.time_ns(), [1.0])], historical=False)
        await up.stop()
        return up

    up = asyncio.run(go())
    assert not up.connected
    assert not (tmp_path / "quarantine").exists()


def test_unreachable_platform_raises_uplink_error(tmp_path: Path) -> None:
    async def go() -> None:
        up = HttpUplink(config(f"http://127.0.0.1:{free_port()}"), data_dir=tmp_path)
        await up.start()  # must not raise although nothing listens
        with pytest.raises(UplinkError, match="unreachable"):
            await up.send([reading("x", 1, [1.0])], historical=False)
        assert not up.connected
        await up.stop()

    asyncio.run(go())


class Peer:
    """An HTTP/1.1 server on 127.0.0.1 answering each request with the next planned status."""

    def __init__(self, plan: list[int], max_points: int | None = None) -> None:
        self.plan = plan
        self.max_points = max_points
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Peer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                headers = dict(
                    line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line
                )
                headers = {k.lower(): v for k, v in headers.items()}
                body = orjson.loads(await r.readexactly(int(headers["content-length"])))
                self.bodies.append(body)
                self.auth.append(headers.get("authorization", ""))
                if self.max_points is not None:
                    status = 413 if len(body["signal"]) > self.max_points else 200
                else:
                    status = self.plan.pop(0)
                payload = orjson.dumps({"error": {"type": "X", "message": f"status {status}"}})
                w.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


@pytest.mark.parametrize("status", [500, 503, 408, 429])
def test_transient_answers_raise_so_the_runtime_retries(status: int, tmp_path: Path) -> None:
    async def go() -> None:
        async with Peer([status, 200]) as peer:
            up = HttpUplink(
                config(f"http://127.0.0.1:{peer.port}", "tenant-key"), data_dir=tmp_path
            )
            batch = [reading("d", 10, [1.0, 2.0])]
            with pytest.raises(UplinkError, match=str(status)):
                await up.send(batch, historical=False)
            await up.send(batch, historical=False)  # the retry is the same batch
            await up.stop()
            assert peer.bodies[0] == peer.bodies[1]
            assert peer.auth == ["Bearer tenant-key"] * 2
            assert up.stats["points_sent"] == 2

    asyncio.run(go())
    assert not (tmp_path / "quarantine").exists()


def test_too_large_batch_is_split(tmp_path: Path) -> None:
    async def go() -> None:
        async with Peer([], max_points=4) as peer:
            up = HttpUplink(config(f"http://127.0.0.1:{peer.port}"), data_dir=tmp_path)
            batch = [reading("d", t, [float(t)] * 3) for t in range(4)]  # 12 points
            await up.send(batch, historical=False)
            await up.stop()
        delivered = [b for b in peer.bodies if len(b["signal"]) <= 4]
        ts = [t for b in delivered for t in b["ts"]]
        assert ts == sorted(ts)
        assert len(ts) == 12
        values = [v for b in delivered for v in b["value"]]
        assert values == [float(t) for t in range(4) for _ in range(3)]
        assert not math.isnan(sum(values))

    asyncio.run(go())


# --- HTTPS: a TLS front (as a reverse proxy would be) before the real platform ------------------
def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shopfloor-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def _tls_front(cert: Path, key: Path, backend_port: int) -> asyncio.Server:
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            br, bw = await asyncio.open_connection("127.0.0.1", backend_port)
        except OSError:
            w.close()
            return
        await asyncio.gather(pipe(r, bw), pipe(br, w))

    return await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ctx)


def test_https_with_the_platforms_ca_and_a_refused_certificate(
    platform: Platform, tmp_path: Path
) -> None:
    cert, key = _self_signed(tmp_path)
    now = time.time_ns()

    async def go() -> None:
        front = await _tls_front(cert, key, platform.port)
        url = f"https://127.0.0.1:{front.sockets[0].getsockname()[1]}"
        try:
            trusted = HttpUplink(config(url, platform.key, ca_file=cert), data_dir=tmp_path)
            await trusted.send([reading("tls-01", now, [7.5])], historical=False)
            await trusted.stop()
            # Without the CA the certificate is not trusted: nothing is sent, the runtime retries.
            stranger = HttpUplink(config(url, platform.key), data_dir=tmp_path)
            with pytest.raises(UplinkError, match=r"(?i)certificate"):
                await stranger.send([reading("tls-01", now + 1000, [8.5])], historical=False)
            await stranger.stop()
        finally:
            front.close()
            await front.wait_closed()

    asyncio.run(go())
    got = platform.points("tls-01/s0")
    assert got["ts"] == [now]
    assert got["value"] == [7.5]
