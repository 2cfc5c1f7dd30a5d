"""A scaled-out deployment as subprocesses: `shopfloor serve --role ...` processes on one
Mosquitto and one PostgreSQL database, each with its own data folder and settings file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.services import free_port

START_S = 60.0


class Role:
    """One `shopfloor serve --role ROLE` process; :meth:`kill` is SIGKILL, :meth:`start`
    again reuses its data folder (so an ingest worker keeps its MQTT client id)."""

    def __init__(self, workdir: Path, role: str, settings: dict[str, Any]) -> None:
        self.role = role
        self.port = free_port()
        self.folder = workdir
        self.folder.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "serve.log"
        self.config = workdir / "settings.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {"data_dir": str(workdir / "data"), "http_port": self.port, "ui": False, **settings}
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [sys.executable, "-m", "shopfloor.cli.main", "serve", "--role", self.role,
               "--config", str(self.config)]  # fmt: skip
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ)

    def wait_ready(self, path: str = "/api/v1/health") -> dict[str, Any]:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.role} exited: {self.tail()}")
            try:
                return self.get(path)
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"{self.role} not ready within {START_S} s: {self.tail()}")

    def get(self, path: str, key: str | None = None) -> dict[str, Any]:
        req = urllib.request.Request(self.base + path)
        if key is not None:
            req.add_header("X-API-Key", key)
        with urllib.request.urlopen(req, timeout=10) as r:
            body: dict[str, Any] = json.loads(r.read())
            return body

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
