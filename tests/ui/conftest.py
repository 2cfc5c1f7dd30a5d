"""Fixtures of the console's browser tests: one running `shopfloor demo` and one headless
Chromium for the whole session (every UI test module shares them), screenshots, login.

Debian's Chromium (`/usr/bin/chromium`, installed by `.ci/run`) is driven by Playwright for
Python with ``executable_path`` (no browser download). Without Chromium the tests skip
locally and fail under CI=true.
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

from tests.services import free_port, require

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@dataclass
class Demo:
    url: str
    data: Path
    users: dict[str, str]
    key: str

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(
            f"{self.url}/api/v1{path}", params=params, headers={"X-API-Key": self.key}, timeout=30
        )
        r.raise_for_status()
        return r.json()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    require("Debian's chromium (/usr/bin/chromium)", CHROMIUM.exists())
    data = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = data / "demo.log"
    cmd = [sys.executable, "-m", "shopfloor.cli.main", "demo", "--data-dir", str(data / "d"),
           "--port", str(port), "--backfill", "20m", "--history", "0"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=data)
    try:
        deadline = time.monotonic() + 120
        while "Backfill done" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        users = dict(
            line.split(" ", 1) for line in (data / "d" / "demo-users.txt").read_text().splitlines()
        )
        key = (data / "d" / "demo-api.key").read_text().strip()
        yield Demo(f"http://127.0.0.1:{port}", data / "d", users, key)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise


@pytest.fixture(scope="session")
def browser(demo: Demo) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def login(page: Any, demo: Demo, user: str = "engineer") -> None:
    """Log in through the form (by the controls' labels, as a screen reader finds them)."""
    page.goto(f"{demo.url}/ui/")
    # Every control is labelled: the test finds them as a screen reader would.
    page.get_by_label("Company (tenant)").fill("demo")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(demo.users[user])
    page.get_by_label("Password").press("Enter")  # the keyboard alone logs in
    page.wait_for_selector("text=Plant", timeout=20_000)
