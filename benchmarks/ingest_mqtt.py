"""MQTT ingest benchmark: durable end-to-end ingest of device telemetry through Mosquitto.

Devices publish to ``sf/v1/{tenant}/{device}/telemetry`` at QoS 1 (ADR 4). Two message kinds
are measured, each against its own ceiling in the same run:

- ``frame``: 100 points per message in the frame form ``{"ts": [...], "values": {...}}``;
- ``single``: one point per message in the short form ``{"temp": 21.5}`` (server time).

The ceiling: the same messages from the same publishers through a fresh Mosquitto to a bare
gmqtt subscriber process that only counts them. The platform: the real server in a subprocess,
started as ``shopfloor up`` starts it, with ``mqtt_mode`` external pointing at a fresh
Mosquitto; a figure runs from the first publish until the historian's ``points_written`` holds
every point, and after a clean stop the data folder is opened again and every point counted.

Run: ``shopfloor bench ingest-mqtt [--quick]`` or ``python -m benchmarks.ingest_mqtt``.
The last line of stdout is one JSON object; see benchmarks/README.md for the keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from benchmarks import progress, run_in_workdir

MOSQUITTO = Path("/usr/sbin/mosquitto")
TENANT = "bench"
TOPIC = "sf/v1/{tenant}/{device}/telemetry"
N_SIGNALS = 10  # per frame message: 10 signals x 10 timestamps = 100 points
N_STEPS = 10
FRAME_POINTS = N_SIGNALS * N_STEPS
SINGLE_SIGNAL = "temp"
STEP_MS = 1000
TARGET_POINTS_PER_S = 500_000
TARGET_SINGLE_MSGS_PER_S = 50_000
ROOT = Path(__file__).resolve().parents[1]


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(f"ingest-mqtt benchmark: {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the broker -----------------------------------------------------------------------------


class Mosquitto:
    """A fresh Mosquitto on a free 127.0.0.1 port, anonymous access, no persistence."""

    def __init__(self, work: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        config = work / "mosquitto.conf"
        # Started as root, mosquitto drops to its own user, which cannot write to the work dir.
        user = "user root\n" if os.geteuid() == 0 else ""
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            "set_tcp_nodelay true\n"
            # The publishers outrun the subscriber for a while: the default queue of 1,000 per
            # client would drop QoS 1 messages, and 20 in flight would cap the subscriber at
            # 20 messages per commit interval.
            "max_queued_messages 0\nmax_queued_bytes 0\nmax_inflight_messages 0\n"
            f"persistence false\n{user}"
        )
        self.log = work / "mosquitto.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not listen on {self.port} in 10 s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- messages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What every publisher sends; each builds its own share in its own process."""

    kind: str  # "frame" or "single"
    devices: int
    messages: int  # in all, over all publishers
    publishers: int
    base_ms: int  # first timestamp of the frame messages

    @property
    def points_per_message(self) -> int:
        return FRAME_POINTS if self.kind == "frame" else 1

    @property
    def points(self) -> int:
        return self.messages * self.points_per_message

    def device(self, d: int) -> str:
        return f"{self.kind}-{d:04d}"

    def per_device(self) -> int:
        return -(-self.messages // self.devices)

    def messages_of(self, publisher: int) -> list[tuple[bytes, bytes]]:
        """(topic, payload) of message numbers publisher, publisher + publishers, ...

        Message m goes to device m % devices as that device's (m // devices)-th message, so
        every (device, signal, timestamp) is sent once. Frame values are random 2-decimal
        floats; a single point's value is its message number, so a lost one can be named.
        """
        rng = np.random.default_rng(1000 + publisher)
        out = []
        topics = [
            TOPIC.format(tenant=TENANT, device=self.device(d)).encode() for d in range(self.devices)
        ]
        for m in range(publisher, self.messages, self.publishers):
            d, j = m % self.devices, m // self.devices
            if self.kind == "single":
                out.append((topics[d], orjson.dumps({SINGLE_SIGNAL: float(m)})))
                continue
            ts = self.base_ms + (j * N_STEPS + np.arange(N_STEPS)) * STEP_MS
            grid = np.round(rng.normal(50.0, 10.0, size=(N_SIGNALS, N_STEPS)), 2)
            values = {f"s{i:02d}": grid[i].tolist() for i in range(N_SIGNALS)}
            out.append((topics[d], orjson.dumps({"ts": ts.tolist(), "values": values})))
        return out

    def warmup(self) -> list[tuple[bytes, bytes]]:
        """One message per device before the measured ones (timestamps before ``base_ms``), so
        that the platform has registered every device and signal when the clock starts."""
        out = []
        for d in range(self.devices):
            topic = TOPIC.format(tenant=TENANT, device=self.device(d)).encode()
            if self.kind == "single":
                out.append((topic, orjson.dumps({SINGLE_SIGNAL: -1.0})))
                continue
            ts = self.base_ms - (N_STEPS - np.arange(N_STEPS)) * STEP_MS
            values = {f"s{i:02d}": [0.0] * N_STEPS for i in range(N_SIGNALS)}
            out.append((topic, orjson.dumps({"ts": ts.tolist(), "values": values})))
        return out

    def frame_range_ns(self) -> tuple[int, int]:
        end_ms = self.base_ms + self.per_device() * N_STEPS * STEP_MS
        return self.base_ms * 1_000_000, end_ms * 1_000_000


# ---- a publisher: MQTT 3.1.1 over a plain socket ---------------------------------------------
# A Python MQTT client spends tens of microseconds per QoS 1 publish in its own bookkeeping,
# CPU the broker and the platform need on 2 cores. The publishers here encode every PUBLISH
# before the clock starts, write them in large chunks with a bounded window of unacknowledged
# messages, and check that every PUBACK arrives, in order, for the right packet id.


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return len(s).to_bytes(2, "big") + s


def connect_packet(client_id: str) -> bytes:
    # protocol name, level 4 (3.1.1), flags: clean session, keepalive 0 (off: the run is short)
    body = (
        _string(b"MQTT") + bytes([4, 0x02]) + (0).to_bytes(2, "big") + _string(client_id.encode())
    )
    return b"\x10" + _remaining_length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    body = _string(topic) + packet_id.to_bytes(2, "big") + payload
    return b"\x32" + _remaining_length(len(body)) + body  # PUBLISH, QoS 1


def packet_id(n: int) -> int:
    return n % 65535 + 1  # 1..65535; 0 is not a valid packet id


class Publisher:
    """One connection sending prepared QoS 1 PUBLISH packets, at most ``window`` unacknowledged."""

    def __init__(self, port: int, client_id: str, window: int) -> None:
        _check(window < 65535, "window must stay below the 65,535 packet ids")
        self.window = window
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id))
        connack = self._recv_exactly(4)
        _check(connack == b"\x20\x02\x00\x00", f"{client_id}: CONNACK {connack!r}, not accepted")
        self.acked = 0
        self.error: str | None = None
        self._cond = threading.Condition()

    def _recv_exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            _check(bool(chunk), "broker closed the connection")
            buf += chunk
        return buf

    def _read_acks(self, total: int) -> None:
        rest = b""
        try:
            while self.acked < total:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError("broker closed the connection")
                data = rest + chunk
                n = len(data) // 4
                acks = np.frombuffer(data, dtype=np.uint8, count=n * 4).reshape(n, 4)
                ids = acks[:, 2].astype(np.int64) * 256 + acks[:, 3]
                want = (np.arange(self.acked, self.acked + n) % 65535) + 1
                if not ((acks[:, 0] == 0x40).all() and (acks[:, 1] == 2).all()):
                    raise ConnectionError(f"expected only PUBACKs, got {data[:16]!r}")
                if not (ids == want).all():
                    raise ConnectionError(f"PUBACK out of order after {self.acked} acks")
                rest = data[n * 4 :]
                with self._cond:
                    self.acked += n
                    self._cond.notify_all()
        except (OSError, ConnectionError) as exc:
            with self._cond:
                self.error = str(exc)
                self._cond.notify_all()

    def send(self, packets: list[bytes], deadline_s: float) -> float:
        """Send everything and wait for every PUBACK; returns the time of the last one."""
        reader = threading.Thread(target=self._read_acks, args=(len(packets),), daemon=True)
        reader.start()
        sent = 0
        stop_at = time.monotonic() + deadline_s
        with self._cond:
            while self.acked < len(packets):
                if self.error:
                    raise RuntimeError(f"publisher: {self.error}")
                upto = min(len(packets), self.acked + self.window)
                if upto - sent >= min(self.window // 4, len(packets) - sent) and upto > sent:
                    chunk = b"".join(packets[sent:upto])
                    sent = upto
                    self._cond.release()
                    try:
                        self.sock.sendall(chunk)
                    finally:
                        self._cond.acquire()
                    continue
                left = stop_at - time.monotonic()
                _check(left > 0, f"publisher: {self.acked:,} of {len(packets):,} acked in time")
                self._cond.wait(min(left, 1.0))
        done = time.monotonic()
        reader.join(5)
        return done

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")  # DISCONNECT
        self.sock.close()


def publish_all(
    port: int, client_id: str, messages: list[tuple[bytes, bytes]], window: int = 1000
) -> None:
    """Send messages from this process and wait until the broker acknowledged all (warm-up)."""
    pub = Publisher(port, client_id, window)
    try:
        pub.send([publish_packet(t, p, packet_id(i)) for i, (t, p) in enumerate(messages)], 60)
    finally:
        pub.close()


def _publisher_proc(
    port: int, plan: Plan, index: int, window: int, ready: Any, go: Any, results: Any
) -> None:
    try:
        msgs = plan.messages_of(index)
        packets = [publish_packet(t, p, packet_id(i)) for i, (t, p) in enumerate(msgs)]
        pub = Publisher(port, f"bench-pub-{plan.kind}-{index}", window)
        ready.put(("ready", index, len(packets)))
        _check(go.wait(120), "publisher: no start signal in 120 s")
        t0 = time.monotonic()
        t_end = pub.send(packets, 300)
        pub.close()
        results.put(("done", index, len(packets), sum(map(len, packets)), t0, t_end))
    except Exception as exc:  # reported to the parent, which fails the run with it
        ready.put(("error", index, repr(exc)))
        results.put(("error", index, repr(exc)))


class Publishers:
    """``plan.publishers`` processes, connected and holding their packets before ``go()``."""

    def __init__(self, port: int, plan: Plan, window: int) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self.results, self.go_event = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.procs = [
            ctx.Process(
                target=_publisher_proc,
                args=(port, plan, i, window, self.ready, self.go_event, self.results),
            )
            for i in range(plan.publishers)
        ]
        for p in self.procs:
            p.start()
        self._expect(self.ready, 120, "start")

    def _expect(self, q: Any, timeout_s: float, what: str) -> list[Any]:
        """One message from every process; a process that died is named, not waited for."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < len(self.procs):
            try:
                msg = q.get(timeout=0.5)
            except queue.Empty:
                dead = [p.exitcode for p in self.procs if p.exitcode not in (None, 0)]
                _check(not dead, f"publisher processes exited with {dead} before they could {what}")
                _check(time.monotonic() < deadline, f"publishers did not {what} in {timeout_s} s")
                continue
            _check(msg[0] != "error", f"publisher {msg[1]} failed to {what}: {msg[2]}")
            got.append(msg)
        return got

    def go(self) -> float:
        t0 = time.monotonic()
        self.go_event.set()
        return t0

    def wait(self, timeout_s: float) -> dict[str, Any]:
        got = self._expect(self.results, timeout_s, "finish")
        for p in self.procs:
            p.join(30)
        return {
            "messages": sum(g[2] for g in got),
            "bytes": sum(g[3] for g in got),
            "start": min(g[4] for g in got),
            "end": max(g[5] for g in got),
        }

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5)


# ---- the ceiling: a bare gmqtt subscriber that only counts ----------------------------------


def _counter_proc(port: int, expected: int, ready: Any, results: Any) -> None:
    from gmqtt import Client

    try:
        import uvloop  # the platform's server runs on uvloop too

        uvloop.install()
    except ImportError:
        pass

    async def run() -> None:
        done = asyncio.get_running_loop().create_future()
        subscribed = asyncio.get_running_loop().create_future()
        state = {"n": 0}

        def on_message(_c: Any, _topic: str, _payload: bytes, _qos: int, _props: Any) -> int:
            n = state["n"] = state["n"] + 1
            if n == expected and not done.done():
                done.set_result(time.monotonic())
            return 0

        def on_subscribe(*_a: Any) -> None:
            if not subscribed.done():
                subscribed.set_result(None)

        # Like the platform's subscriber: QoS 1 through a shared subscription, each message
        # acknowledged when the callback returns (here at once), up to 65,535 in flight.
        client = Client("bench-ceiling", receive_maximum=65535)
        client.on_message = on_message
        client.on_subscribe = on_subscribe
        await client.connect("127.0.0.1", port, keepalive=60)
        client.subscribe(f"$share/bench-ceiling/{TOPIC.format(tenant='+', device='+')}", qos=1)
        await asyncio.wait_for(subscribed, 10)
        ready.put("ready")
        t_end = await asyncio.wait_for(done, 600)
        results.put(("done", state["n"], t_end))
        await asyncio.sleep(0.2)  # let the last PUBACKs go out
        await client.disconnect()

    try:
        asyncio.run(run())
    except Exception as exc:  # reported to the parent, which fails the run with it
        ready.put(f"error {exc!r}")
        results.put(("error", repr(exc)))


def measure_ceiling(work: Path, plan: Plan, window: int) -> dict[str, Any]:
    broker = Mosquitto(work / f"broker-ceiling-{plan.kind}")
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    warm = plan.warmup()
    counter = ctx.Process(
        target=_counter_proc, args=(broker.port, len(warm) + plan.messages, ready, results)
    )
    pubs: Publishers | None = None
    try:
        counter.start()
        msg = ready.get(timeout=30)
        _check(msg == "ready", f"ceiling subscriber: {msg}")
        publish_all(broker.port, "bench-warmup", warm)
        pubs = Publishers(broker.port, plan, window)
        t0 = pubs.go()
        sent = pubs.wait(600)
        try:
            got = results.get(timeout=120)  # delivery ends soon after the last publish
        except queue.Empty:
            raise AssertionError(
                "ingest-mqtt benchmark: the ceiling subscriber did not get every message "
                "within 120 s of the last publish"
            ) from None
        _check(got[0] == "done", f"ceiling subscriber: {got}")
        counter.join(10)
    finally:
        if pubs is not None:
            pubs.kill()
        if counter.is_alive():
            counter.kill()
        broker.stop()
    elapsed = got[2] - t0
    res = {
        "messages": sent["messages"],
        "bytes": sent["bytes"],
        "elapsed_s": elapsed,
        "publish_s": sent["end"] - t0,
        "msgs_per_s": plan.messages / elapsed,
        "points_per_s": plan.points / elapsed,
    }
    progress(
        f"ceiling {plan.kind}: {res['msgs_per_s']:,.0f} msgs/s = {res['points_per_s']:,.0f} "
        f"points/s ({plan.messages:,} messages in {elapsed:.2f} s; "
        f"publishers done after {res['publish_s']:.2f} s)"
    )
    return res


# ---- the platform ---------------------------------------------------------------------------


def serve(data_dir: Path, port: int, mqtt_url: str) -> None:
    from shopfloor.api.server import run_server
    from shopfloor.core.config import Settings

    # exactly as `shopfloor up` runs it, with the external broker's settings
    settings = Settings(
        data_dir=data_dir,
        http_host="127.0.0.1",
        http_port=port,
        mqtt_mode="external",
        mqtt_url=mqtt_url,
    )
    run_server(settings)


class PlatformServer:
    def __init__(self, data_dir: Path, mqtt_url: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH", "")])])
        cmd = [sys.executable, "-m", "benchmarks.ingest_mqtt", "--serve"]
        cmd += ["--data-dir", str(data_dir), "--port", str(self.port), "--mqtt-url", mqtt_url]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sys.stderr)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"platform server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("platform server did not start in 60 s")
            time.sleep(0.2)

    def points_written(self) -> int:
        health = httpx.get(self.url + "/health", timeout=10).json()
        return int(health["historian"]["points_written"])

    def mqtt_stats(self, key: str) -> dict[str, Any]:
        """The endpoint's counters: accepted, rejected (with reasons), unstored messages."""
        r = httpx.get(
            self.url + "/api/v1/mqtt/stats", headers={"Authorization": f"Bearer {key}"}, timeout=10
        )
        _check(r.status_code == 200, f"/api/v1/mqtt/stats: {r.status_code} {r.text[:300]}")
        stats: dict[str, Any] = r.json()
        _check(
            stats.get("running") is True, f"the platform's MQTT endpoint is not running: {stats}"
        )
        return stats

    def wait_points(self, at_least: int, timeout_s: float, poll_s: float = 0.02) -> float:
        """Poll until ``points_written`` reaches ``at_least``; returns when it was seen."""
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=10) as http:
            while True:
                written = int(http.get(self.url + "/health").json()["historian"]["points_written"])
                now = time.monotonic()
                if written >= at_least:
                    return now
                if self.proc.poll() is not None:
                    raise RuntimeError(f"platform server exited with {self.proc.returncode}")
                _check(now < deadline, f"platform wrote {written:,} of {at_least:,} points in time")
                time.sleep(poll_s)

    def stop(self) -> int:
        """Graceful stop (SIGINT: uvicorn drains, the lifespan closes the historian)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("platform server did not stop in 60 s") from None
        return self.proc.returncode


def measure_platform(
    server: PlatformServer, key: str, port: int, plan: Plan, window: int, timeout_s: float
) -> dict[str, Any]:
    server.mqtt_stats(key)  # the endpoint must be up before anything is published
    warm = plan.warmup()
    before = server.points_written()
    publish_all(port, f"bench-warmup-{plan.kind}", warm)
    warm_points = len(warm) * plan.points_per_message
    server.wait_points(before + warm_points, 120)
    base = before + warm_points
    pubs = Publishers(port, plan, window)
    try:
        wall0 = time.time_ns()
        t0 = pubs.go()
        t_end = server.wait_points(base + plan.points, timeout_s)
        wall1 = time.time_ns()
        sent = pubs.wait(60)
    finally:
        pubs.kill()
    stats = server.mqtt_stats(key)
    elapsed = t_end - t0
    res = {
        "messages": sent["messages"],
        "bytes": sent["bytes"],
        "elapsed_s": elapsed,
        "publish_s": sent["end"] - t0,
        "msgs_per_s": plan.messages / elapsed,
        "points_per_s": plan.points / elapsed,
        "wall_ns": (wall0, wall1),
        "accepted_messages": stats.get("accepted_messages"),
        "rejected_messages": stats.get("rejected_messages"),
        "rejected": stats.get("rejected", [])[:5],
        "unstored_messages": stats.get("unstored_messages"),
    }
    progress(
        f"platform {plan.kind}: {res['msgs_per_s']:,.0f} msgs/s = {res['points_per_s']:,.0f} "
        f"points/s ({plan.messages:,} messages in {elapsed:.2f} s; "
        f"publishers done after {res['publish_s']:.2f} s)"
    )
    return res


def count_stored(settings: Any, tenant_id: int, frame: Plan, single: Plan, single_ns: Any) -> Any:
    """After a clean stop: open the data folder again; (frame points stored, single values
    missing) — a frame point counts once per (signal, timestamp) in the measured range, a
    single message by its value (its message number)."""
    from shopfloor.api.platform import Platform

    plat = Platform(settings)
    try:
        keys = [
            f"{frame.device(d)}/s{i:02d}" for d in range(frame.devices) for i in range(N_SIGNALS)
        ]
        ids = plat.registry.resolve_keys(tenant_id, keys)
        start, end = frame.frame_range_ns()
        frame_rows = plat.historian.query_raw(tenant_id, ids, start, end).num_rows
        keys = [f"{single.device(d)}/{SINGLE_SIGNAL}" for d in range(single.devices)]
        ids = plat.registry.resolve_keys(tenant_id, keys)
        lo, hi = single_ns
        stored = plat.historian.query_raw(tenant_id, ids, lo - 10**9, hi + 60 * 10**9)
        values = np.unique(stored.column("value").to_numpy(zero_copy_only=False))
    finally:
        plat.close()
    missing = np.setdiff1d(np.arange(single.messages, dtype=np.float64), values)
    return frame_rows, missing


def measure_platform_both(
    work: Path, frame: Plan, single: Plan, window: int, timeout_s: float
) -> dict[str, Any]:
    from shopfloor.api.platform import Platform
    from shopfloor.core.config import Settings

    settings = Settings(data_dir=work / "data")
    plat = Platform(settings)
    try:
        tenant, key = plat.registry.create_tenant(TENANT)
    finally:
        plat.close()
    broker = Mosquitto(work / "broker-platform")
    try:
        server = PlatformServer(settings.data_dir, broker.url)
        try:
            fr = measure_platform(server, key, broker.port, frame, window, timeout_s)
            si = measure_platform(server, key, broker.port, single, window, timeout_s)
            written = server.points_written()
        finally:
            rc = server.stop()
    finally:
        broker.stop()
    _check(rc == 0, f"platform server exited with {rc}")
    frame_rows, missing = count_stored(settings, tenant.id, frame, single, si.pop("wall_ns"))
    fr.pop("wall_ns")
    progress(
        f"verified after a clean stop: {frame_rows:,} of {frame.points:,} frame points stored, "
        f"{single.messages - len(missing):,} of {single.messages:,} single points"
    )
    return {
        "frame": fr,
        "single": si,
        "points_written": written,
        "frame_points_stored": frame_rows,
        "single_points_missing": missing,
    }


# ---- the run --------------------------------------------------------------------------------


def run(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    base_ms = (int(time.time()) - 2 * 86400) * 1000
    frame = Plan("frame", a.devices, a.messages, a.publishers, base_ms)
    single = Plan("single", a.devices, a.single_messages, a.publishers, base_ms)
    message_bytes = len(frame.messages_of(0)[0][1])
    progress(
        f"frame: {frame.messages:,} messages of {FRAME_POINTS} points ({message_bytes} bytes) "
        f"to {frame.devices} devices; single: {single.messages:,} messages; "
        f"{a.publishers} publisher processes, window {a.window}, QoS 1"
    )
    t = time.perf_counter()
    ceil_frame = measure_ceiling(work, frame, a.window)
    ceil_single = measure_ceiling(work, single, a.window)
    result: dict[str, Any] = {
        "benchmark": "ingest-mqtt",
        "quick": a.quick,
        "points_per_s": None,
        "broker_ceiling_points_per_s": round(ceil_frame["points_per_s"]),
        "ratio": None,
        "single_point_msgs_per_s": None,
        "single_point_broker_ceiling_msgs_per_s": round(ceil_single["msgs_per_s"]),
        "single_point_ratio": None,
        "publishers": a.publishers,
        "cpus": os.cpu_count(),
        "devices": a.devices,
        "messages": frame.messages,
        "points": frame.points,
        "points_per_message": FRAME_POINTS,
        "single_point_messages": single.messages,
        "qos": 1,
        "message_bytes": message_bytes,
        "single_point_message_bytes": len(single.messages_of(0)[0][1]),
        "window": a.window,
        "broker_ceiling_duration_s": round(ceil_frame["elapsed_s"], 3),
        "single_point_broker_ceiling_duration_s": round(ceil_single["elapsed_s"], 3),
    }
    if a.skip_platform:
        result["platform"] = "skipped (--skip-platform)"
        return result
    try:
        plat = measure_platform_both(work, frame, single, a.window, a.timeout)
    except Exception as exc:
        # The ceilings stand on their own; the platform part fails the run, with its reason.
        result["platform"] = "failed"
        result["failed"] = f"platform part: {exc!r}"
        progress(f"platform part failed: {exc!r}")
        return result
    fr, si = plat["frame"], plat["single"]
    non_stored = frame.points - plat["frame_points_stored"]
    single_missing = plat["single_points_missing"]
    result.update(
        {
            "points_per_s": round(fr["points_per_s"]),
            "ratio": round(fr["points_per_s"] / ceil_frame["points_per_s"], 3),
            "single_point_msgs_per_s": round(si["msgs_per_s"]),
            "single_point_ratio": round(si["msgs_per_s"] / ceil_single["msgs_per_s"], 3),
            "duration_s": round(fr["elapsed_s"], 3),
            "publish_s": round(fr["publish_s"], 3),
            "single_point_duration_s": round(si["elapsed_s"], 3),
            "single_point_publish_s": round(si["publish_s"], 3),
            "points_written": plat["points_written"],
            "distinct_points_stored": plat["frame_points_stored"],
            "non_stored": non_stored,
            "single_point_non_stored": len(single_missing),
            "accepted_messages": si["accepted_messages"],
            "rejected_messages": si["rejected_messages"],
            "unstored_messages": si["unstored_messages"],
            "platform": "ok",
        }
    )
    result["targets_met"] = {
        "points_per_s": fr["points_per_s"] >= TARGET_POINTS_PER_S,
        "single_point_msgs_per_s": si["msgs_per_s"] >= TARGET_SINGLE_MSGS_PER_S,
    }
    if a.quick:
        result["targets_note"] = "targets apply to the full size run, not --quick"
    result["measure_s"] = round(time.perf_counter() - t, 1)
    problems = []
    if non_stored:
        problems.append(f"{non_stored:,} of {frame.points:,} frame points not stored")
    if len(single_missing):
        problems.append(
            f"{len(single_missing):,} single-point messages not stored, e.g. numbers "
            f"{single_missing[:5].astype(int).tolist()}; points_written had counted them "
            "all, so they were written and then overwritten by another message of the same "
            "device with the same server timestamp"
        )
    if si["rejected_messages"]:
        problems.append(f"the platform rejected {si['rejected_messages']:,}: {si['rejected']}")
    if problems:
        result["failed"] = "; ".join(problems)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="shopfloor bench ingest-mqtt", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer messages (under 60 s)")
    ap.add_argument("--data-dir", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--messages", type=int, help="frame messages of 100 points")
    ap.add_argument("--single-messages", type=int, help="single-point messages")
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--publishers", type=int, default=4, help="publisher processes")
    ap.add_argument(
        "--window", type=int, default=2000, help="unacknowledged messages per publisher"
    )
    ap.add_argument("--timeout", type=float, default=300, help="seconds a platform phase may take")
    ap.add_argument("--skip-platform", action="store_true", help="measure the ceilings only")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mqtt-url", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve(a.data_dir, a.port, a.mqtt_url)
        return {}
    _check(MOSQUITTO.exists(), f"{MOSQUITTO} is missing (apt-get install mosquitto)")
    a.messages = a.messages or (10_000 if a.quick else 100_000)
    a.single_messages = a.single_messages or (20_000 if a.quick else 150_000)
    return run_in_workdir("ingest-mqtt", a.data_dir, lambda work: run(a, work))


if __name__ == "__main__":
    main()
