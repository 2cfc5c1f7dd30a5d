"""kill -9 in the middle of ingest: every batch the server acknowledged is there after restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from tests.services import free_port

SIGNALS = 50
PER_BATCH = 10  # timestamps per signal per batch -> 500 points


def _start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "shopfloor.cli.main",
        "up",
        "--data-dir",
        str(data_dir),
        "--port",
        str(port),
    ]
    log = data_dir / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(
        f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
    )


def test_acknowledged_batches_survive_kill_9(tmp_path: Path) -> None:
    platform = Platform(Settings(data_dir=tmp_path))
    tenant, key = platform.registry.create_tenant("acme")
    platform.close()
    port = free_port()
    proc = _start_server(tmp_path, port)
    base_ms = (int(time.time()) - 3600) * 1000
    acked: list[int] = []
    stop = threading.Event()
    names = [f"s{i}" for i in range(SIGNALS)]

    def sender(worker: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": key}) as c:
            batch = worker
            while not stop.is_set():
                ts = [base_ms + (batch * PER_BATCH + k) * 10 for k in range(PER_BATCH)]
                doc = {
                    "device": "crash",
                    "signal": [n for n in names for _ in ts],
                    "ts": ts * SIGNALS,
                    "value": [float(batch)] * (SIGNALS * PER_BATCH),
                }
                try:
                    r = c.post("/api/v1/ingest", json=doc, timeout=5)
                except httpx.TransportError:
                    return  # the server died under us: this batch was never acknowledged
                if r.status_code == 200:
                    acked.append(batch)
                batch += 4

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: senders are still posting
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 200, "too few batches acknowledged before the kill"

    restarted = Platform(Settings(data_dir=tmp_path))
    try:
        ids = restarted.registry.resolve_keys(tenant.id, [f"crash/{n}" for n in names])
        stored = restarted.historian.query_raw(
            tenant.id, ids, base_ms * 10**6, (base_ms + 10**8) * 10**6
        )
        ts = np.asarray(stored.column("ts")) // 10**6
        batch_of_point = (ts - base_ms) // 10 // PER_BATCH
        values = np.asarray(stored.column("value"))
        assert np.array_equal(values, batch_of_point.astype(float)), (
            "a stored value does not match its batch"
        )
        counts = dict(zip(*np.unique(batch_of_point, return_counts=True), strict=True))
        missing = [b for b in acked if counts.get(b, 0) != SIGNALS * PER_BATCH]
        assert not missing, (
            f"{len(missing)} acknowledged batches incomplete after kill -9: {missing[:10]}"
        )
    finally:
        restarted.close()
