"""Scale-out benchmark: durable MQTT ingest through 1 and then 2 ingest workers on one
PostgreSQL database, against a plain COPY of the same rows.

The setup is the three-machine layout of docs/deployment.md on one host: a fresh Mosquitto,
a throwaway PostgreSQL cluster (registry and historian databases), and ``shopfloor serve --role
ingest`` worker processes sharing the device subscriptions (MQTT 5 shared subscriptions, group
``shopfloor``). Publisher processes send frame messages of 100 points at QoS 1 (the messages of
benchmarks/ingest_mqtt.py). A figure runs from the first publish until the workers' historians
together report every point written (``/api/v1/health``: ``historian.points_written``, counted
after each commit); the database is then asked how many distinct points it holds.

``postgres_copy_ceiling_points_per_s`` is one binary COPY stream of the same number of rows into
an indexed table in the same cluster, with nothing else running: what the database takes from
one writer. On a 2-core host the broker, the publishers, the workers and PostgreSQL share the
cores, so two workers cannot double one; the point is to see whether a second adds throughput
before the database or the cores are saturated.

Run: ``shopfloor bench scale-out [--quick]`` or ``python -m benchmarks.scale_out``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from benchmarks import progress, run_in_workdir
from benchmarks.historian_postgres import _ceiling
from benchmarks.ingest_mqtt import (
    FRAME_POINTS,
    MOSQUITTO,
    N_SIGNALS,
    N_STEPS,
    STEP_MS,
    TENANT,
    Mosquitto,
    Plan,
    Publishers,
    _check,
    _free_port,
    publish_all,
)

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def _cluster() -> Iterator[Any]:
    from tests.historian.postgres_service import PostgresCluster, missing

    why = missing()
    _check(why is None, f"needs {why}")
    with PostgresCluster() as cluster:
        yield cluster


class Worker:
    """One ``shopfloor serve --role ingest`` process with its own data folder and port."""

    def __init__(self, work: Path, index: int, settings: dict[str, Any]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = work / f"worker-{index}"
        data.mkdir(parents=True, exist_ok=True)
        config = data / "shopfloor.yaml"
        config.write_text(yaml.safe_dump({**settings, "data_dir": str(data)}))
        self.log = (data / "worker.log").open("wb")
        cmd = [sys.executable, "-m", "shopfloor.cli.main", "serve", "--role", "ingest"]
        cmd += ["--config", str(config), "--http-port", str(self.port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=self.log)
        self.path = data

    def health(self, http: httpx.Client) -> dict[str, Any] | None:
        try:
            r = http.get(self.url + "/api/v1/health")
        except httpx.TransportError:
            return None
        return r.json() if r.status_code == 200 else None

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                h = self.health(http)
                if h is not None and h.get("status") == "ok":
                    return
                time.sleep(0.2)
        self.stop()
        tail = (self.path / "worker.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"ingest worker on {self.port} did not get ready: {tail}")

    def points_written(self, http: httpx.Client) -> int:
        h = self.health(http)
        _check(h is not None, f"worker {self.port} stopped answering its health probe")
        assert h is not None
        return int(h["historian"]["points_written"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _written(workers: list[Worker], http: httpx.Client) -> int:
    return sum(w.points_written(http) for w in workers)


def _wait_written(workers: list[Worker], at_least: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=10) as http:
        while True:
            n = _written(workers, http)
            now = time.monotonic()
            if n >= at_least:
                return now
            _check(now < deadline, f"workers wrote {n:,} of {at_least:,} points in time")
            time.sleep(0.02)


def measure(
    work: Path, cluster: Any, n_workers: int, plan: Plan, window: int, timeout_s: float
) -> dict[str, Any]:
    """A fresh registry + historian database, broker and ``n_workers`` workers; one run."""
    from shopfloor.registry.service import Registry

    reg_url = cluster.new_database(f"reg{n_workers}")
    hist_url = cluster.new_database(f"hist{n_workers}")
    reg = Registry(reg_url)
    try:
        reg.upgrade()
        reg.create_tenant(TENANT)
    finally:
        reg.close()
    broker = Mosquitto(work / f"broker-{n_workers}")
    workers: list[Worker] = []
    try:
        settings = {
            "registry_url": reg_url,
            "historian_url": hist_url,
            "mqtt_mode": "external",
            "mqtt_url": broker.url,
            "ui": False,
        }
        workers = [Worker(work, i, settings) for i in range(n_workers)]
        for w in workers:
            w.wait_ready()
        time.sleep(0.5)  # every worker's subscription is in the share group
        with httpx.Client(timeout=10) as http:
            before = _written(workers, http)
        warm = plan.warmup()
        publish_all(broker.port, f"bench-warmup-{n_workers}", warm)
        base = before + len(warm) * FRAME_POINTS
        _wait_written(workers, base, 120)
        pubs = Publishers(broker.port, plan, window)
        try:
            t0 = pubs.go()
            t_end = _wait_written(workers, base + plan.points, timeout_s)
            pubs.wait(60)
        finally:
            pubs.kill()
        with httpx.Client(timeout=10) as http:
            per_worker = [w.points_written(http) for w in workers]
    finally:
        for w in workers:
            w.stop()
        broker.stop()
    stored = _distinct_points(reg_url, hist_url, plan)
    elapsed = t_end - t0
    res = {
        "points_per_s": plan.points / elapsed,
        "elapsed_s": elapsed,
        "points_written_per_worker": per_worker,
        "distinct_points_stored": stored,
    }
    progress(
        f"{n_workers} worker(s): {res['points_per_s']:,.0f} points/s ({plan.points:,} points in "
        f"{elapsed:.2f} s; written per worker {per_worker}; {stored:,} distinct stored)"
    )
    return res


def _distinct_points(reg_url: str, hist_url: str, plan: Plan) -> int:
    """Distinct (signal, ts) of the measured range, read back by a fresh backend (rows and
    compacted blocks alike; a point written twice counts once, as the contract says)."""
    from shopfloor.historian.postgres_backend import PostgresHistorian
    from shopfloor.registry.service import Registry

    reg = Registry(reg_url)
    try:
        tenant = reg.get_tenant(TENANT)
        keys = [f"{plan.device(d)}/s{i:02d}" for d in range(plan.devices) for i in range(N_SIGNALS)]
        ids = reg.resolve_keys(tenant.id, keys)
    finally:
        reg.close()
    start, end = plan.frame_range_ns()
    h = PostgresHistorian(hist_url, background=False)
    try:
        return int(h.query_raw(tenant.id, ids, start, end).num_rows)
    finally:
        h.close()


def ceiling(cluster: Any, points: int) -> float:
    """One COPY stream of ``points`` rows like the workers' (100 signals a device, 1 s apart)."""
    from shopfloor.core.types import make_batch
    from shopfloor.historian.postgres_copy import encode_points

    url = cluster.new_database("ceiling")
    rng = np.random.default_rng(7)
    per_batch = 100_000
    payloads = []
    for i in range(0, points, per_batch):
        n = min(per_batch, points - i)
        idx = np.arange(i, i + n)
        sid = (idx // N_STEPS) % 2000 + 1
        ts = 1_700_000_000_000_000_000 + (idx % N_STEPS + idx // (N_STEPS * 2000) * N_STEPS) * (
            STEP_MS * 1_000_000
        )
        batch = make_batch(1, sid, ts, np.round(rng.normal(50, 10, n), 2))
        payloads.append(encode_points(batch, i << 20))
    rate, _ = _ceiling(url, payloads, points)
    progress(f"plain COPY ceiling: {rate:,.0f} points/s")
    return rate


def run(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    base_ms = (int(time.time()) - 2 * 86400) * 1000
    plan = Plan("frame", a.devices, a.messages, a.publishers, base_ms)
    progress(
        f"{plan.messages:,} messages of {FRAME_POINTS} points ({N_SIGNALS} signals x {N_STEPS}) "
        f"to {plan.devices} devices from {a.publishers} publisher processes, QoS 1"
    )
    with _cluster() as cluster:
        one = measure(work, cluster, 1, plan, a.window, a.timeout)
        two = measure(work, cluster, 2, plan, a.window, a.timeout)
        copy = ceiling(cluster, plan.points)
    result: dict[str, Any] = {
        "benchmark": "scale-out",
        "quick": a.quick,
        "points_per_s_1_worker": round(one["points_per_s"]),
        "points_per_s_2_workers": round(two["points_per_s"]),
        "postgres_copy_ceiling_points_per_s": round(copy),
        "speedup_2_workers": round(two["points_per_s"] / one["points_per_s"], 3),
        "ratio_1_worker": round(one["points_per_s"] / copy, 3),
        "ratio_2_workers": round(two["points_per_s"] / copy, 3),
        "points_written_per_worker_2": two["points_written_per_worker"],
        "distinct_points_stored_1": one["distinct_points_stored"],
        "distinct_points_stored_2": two["distinct_points_stored"],
        "points": plan.points,
        "messages": plan.messages,
        "devices": plan.devices,
        "publishers": a.publishers,
        "cpus": os.cpu_count(),
    }
    problems = []
    for n, r in ((1, one), (2, two)):
        if r["distinct_points_stored"] != plan.points:
            problems.append(f"{n} worker(s): {r['distinct_points_stored']:,} of {plan.points:,}")
    if min(two["points_written_per_worker"]) == 0:
        problems.append("one of the two workers wrote nothing: the share group did not split")
    if problems:
        result["failed"] = "; ".join(problems)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="shopfloor bench scale-out", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer messages (about a minute)")
    ap.add_argument("--messages", type=int, help="frame messages of 100 points per run")
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes")
    ap.add_argument("--window", type=int, default=2000, help="unacknowledged per publisher")
    ap.add_argument("--timeout", type=float, default=300, help="seconds a run may take")
    ap.add_argument("--data-dir", type=Path, help="work folder (default: a temporary one)")
    a = ap.parse_args(argv)
    _check(MOSQUITTO.exists(), f"{MOSQUITTO} is missing (apt-get install mosquitto)")
    a.messages = a.messages or (5_000 if a.quick else 40_000)
    return run_in_workdir("scale-out", a.data_dir, lambda work: run(a, work))


if __name__ == "__main__":
    main()
