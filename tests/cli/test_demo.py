"""`shopfloor demo` end to end: the command from the README, a real server, real HTTP."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.services import free_port


def test_demo_serves_a_simulated_factory(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.log"
    cmd = [sys.executable, "-m", "shopfloor.cli.main", "demo", "--data-dir", str(tmp_path / "d"),
           "--port", str(port), "--backfill", "10m", "--history", "1d"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        key_file = tmp_path / "d" / "demo-api.key"
        deadline = time.monotonic() + 90
        body: dict = {}
        while time.monotonic() < deadline:
            time.sleep(0.5)
            assert proc.poll() is None, log.read_text()
            if not key_file.exists() or "Backfill done" not in log.read_text():
                continue
            headers = {"X-API-Key": key_file.read_text().strip()}
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/latest",
                    params={"device": "press-01"},
                    headers=headers,
                )
            except httpx.TransportError:
                continue
            if r.status_code == 200 and r.json()["points"]:
                body = r.json()
                break
        assert body, log.read_text()
        assert len(body["points"]) >= 15  # a press has a few dozen signals
        tree = httpx.get(f"http://127.0.0.1:{port}/api/v1/tree", headers=headers).json()
        text = str(tree)
        assert "Demo Manufacturing" in text
        assert "press-01" in text
        # ten minutes of backfilled history at 1 Hz for a temperature-like signal
        key = next(p["signal"] for p in body["points"] if "temp" in p["signal"])
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/downsample",
            params={"signal": key, "start": "-15m", "interval": "1h", "agg": "count"},
            headers=headers,
        )
        assert sum(sum(s["count"]) for s in r.json()["series"]) >= 550
        # a day of older history at one reading a minute before that
        r = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/downsample",
            params={"signal": key, "start": "-25h", "end": "-1h", "interval": "1d", "agg": "count"},
            headers=headers,
        )
        assert 20 * 60 <= sum(sum(s["count"]) for s in r.json()["series"]) <= 24 * 60 + 1
        # the installed apps are enabled for the demo tenant and running
        apps = httpx.get(f"http://127.0.0.1:{port}/api/v1/apps", headers=headers).json()["apps"]
        assert apps
        for a in apps:
            assert a["enabled"], a
            assert a["status"]["running"], a
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)  # a demo stops within seconds of SIGTERM
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise AssertionError("the demo did not stop within 30 s of SIGTERM") from None
    assert proc.returncode in (0, -15), f"exit {proc.returncode}: {log.read_text()[-4000:]}"
