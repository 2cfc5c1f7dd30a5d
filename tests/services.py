"""Real services the tests start themselves: free ports, the CI rule, a Mosquitto process.

A test that needs a service it cannot find skips on a developer's machine and fails under
``CI=true``, where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

import pytest

MOSQUITTO: Final = Path("/usr/sbin/mosquitto")
MOSQUITTO_CTRL: Final = Path("/usr/bin/mosquitto_ctrl")
DYNSEC: Final = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
WAIT_S: Final = 10.0


def require(what: str, ok: bool) -> None:
    if ok:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required when CI=true")
    pytest.skip(f"{what} is not available")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """Mosquitto as a subprocess with a temp config on a free 127.0.0.1 port; :meth:`stop` and
    :meth:`start` again keep the port.

    ``persistence`` keeps sessions across a restart (a subscriber's messages sent while it
    reconnects are queued for it, not lost); ``dynsec_admin`` turns on the dynamic-security
    plugin with that admin login and no anonymous access.
    """

    def __init__(
        self,
        workdir: Path,
        dynsec_admin: tuple[str, str] | None = None,
        *,
        persistence: bool = True,
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log = workdir / "mosquitto.log"
        # Started as root, mosquitto drops to its own user, which cannot write to tmp_path.
        user = "user root\n" if os.geteuid() == 0 else ""
        conf = f"listener {self.port} 127.0.0.1\n{user}"
        if persistence:
            conf += f"persistence true\npersistence_location {workdir}/\n"
        else:
            conf += "persistence false\n"
        if dynsec_admin is None:
            conf += "allow_anonymous true\n"
        else:
            dynsec_file = workdir / "dynsec.json"
            subprocess.run(
                [str(MOSQUITTO_CTRL), "dynsec", "init", str(dynsec_file), *dynsec_admin],
                check=True,
                capture_output=True,
                timeout=30,
            )
            conf += (
                f"allow_anonymous false\nplugin {DYNSEC}\nplugin_opt_config_file {dynsec_file}\n"
            )
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(MOSQUITTO), "-c", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {WAIT_S} s")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT_S)
