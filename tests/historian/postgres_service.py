"""A throwaway PostgreSQL cluster for tests and benchmarks: ``initdb`` into a temp folder,
``pg_ctl start`` on a free port with its unix socket in that folder, ``pg_ctl stop`` at the end.

PostgreSQL refuses to run as root; when the tests run as root the cluster runs as the
``postgres`` user (the temp folder is handed to it). One cluster per test session
(:func:`shared_cluster`); every test gets its own schema in it (:meth:`PostgresCluster.new_schema`),
which is instant where a new database costs a template copy.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from tests.services import free_port

BINARIES: Final = ("initdb", "pg_ctl", "postgres")
WAIT_S: Final = 30


def _search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    dirs.append(Path("/usr/local/bin"))
    return dirs


def find_binary(name: str) -> Path | None:
    for d in _search_dirs():
        candidate = d / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing() -> str | None:
    """What is missing to run a cluster here (None when nothing is)."""
    for name in BINARIES:
        if find_binary(name) is None:
            return f"PostgreSQL ({name})"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "a 'postgres' user to run PostgreSQL as (running as root)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg (pip install 'psycopg[binary]>=3.2')"
    return None


class PostgresCluster:
    """One postgres server on 127.0.0.1:<free port> and a unix socket in its temp folder."""

    def __init__(self, *, fsync: bool = True, settings: dict[str, str] | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="shopfloor-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = free_port()
        self.fsync = fsync
        self.settings = settings or {}
        self.user: str | None = "postgres" if os.geteuid() == 0 else None
        self.running = False
        self._names = itertools.count(1)
        self._lock = threading.Lock()

    def _run(self, *args: str) -> None:
        kwargs: dict[str, Any] = {"cwd": self.folder, "capture_output": True, "timeout": WAIT_S}
        if self.user is not None:
            kwargs["user"] = self.user
        done = subprocess.run(list(args), check=False, **kwargs)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')[-2000:]}\n{log}"
            )

    def start(self) -> PostgresCluster:
        initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL binaries not found")
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        if not self.data.exists():  # a restart keeps the cluster
            self._run(
                str(initdb), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
            )  # fmt: skip
        options = {
            "port": str(self.port),
            "unix_socket_directories": str(self.folder),
            "listen_addresses": "127.0.0.1",
            "fsync": "on" if self.fsync else "off",
            "max_connections": "200",
            **self.settings,
        }
        opts = " ".join(f"-c {k}={v}" for k, v in options.items())
        self._run(str(pg_ctl), "-D", str(self.data), "-l", str(self.log), "-o", opts,
                  "-w", "-t", str(WAIT_S), "start")  # fmt: skip
        self.running = True
        return self

    def url(self, dbname: str = "postgres", schema: str | None = None) -> str:
        query = f"host={quote(str(self.folder))}&port={self.port}"
        if schema is not None:
            query += "&options=" + quote(f"-csearch_path={schema}")
        return f"postgresql://postgres@/{dbname}?{query}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as con:
            con.execute(sql.encode())

    def new_database(self, prefix: str = "db") -> str:
        with self._lock:
            name = f"{prefix}_{next(self._names)}"
        self.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def new_schema(self, prefix: str = "t") -> str:
        """A fresh schema in the ``postgres`` database; its URL puts it first on search_path."""
        with self._lock:
            name = f"{prefix}_{next(self._names)}"
        self.execute(f"CREATE SCHEMA {name}")
        return self.url(schema=name)

    def halt(self, mode: str = "fast") -> None:
        """Stop the server and keep the cluster; ``immediate`` is a crash (no checkpoint, the
        next start recovers from the WAL)."""
        if self.running:
            self._run(str(find_binary("pg_ctl")), "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        with contextlib.suppress(Exception):
            self.halt()
        self.running = False
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_shared: PostgresCluster | None = None
_shared_lock = threading.Lock()


def shared_cluster() -> PostgresCluster:
    """The session's cluster, started on first use and stopped when the process exits."""
    global _shared
    with _shared_lock:
        if _shared is None:
            cluster = PostgresCluster().start()
            atexit.register(cluster.stop)
            _shared = cluster
        return _shared


def open_historian(url: str, opened: list[Any], **kw: Any) -> Any:
    """A PostgresHistorian on ``url`` for a test (2 ms commits, no background work), closed
    with the others in ``opened`` at the test's end (the ``opened`` fixture)."""
    from shopfloor.historian.postgres_backend import PostgresHistorian

    h = PostgresHistorian(url, commit_interval_ms=2, background=False, **kw)
    opened.append(h)
    return h
