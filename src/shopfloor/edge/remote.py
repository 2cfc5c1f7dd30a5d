"""Connectors configured from the platform: long-poll, validate, apply, report, browse.

With ``remote:`` in edge.yaml the gateway asks the platform for its connectors
(``GET /api/v1/gateways/{gateway}/config?wait_s=..&after_version=V``, a long-poll that answers
at once when the version differs from V or a browse request waits) and:

1. validates them with the gateway's own parser (:func:`parse_edge_config`), so a section the
   gateway cannot run is refused before anything is stopped;
2. applies them (:meth:`Gateway.apply_remote`: new connectors start, removed ones stop, changed
   ones restart, unchanged ones and the buffer run on);
3. saves them to ``<data_dir>/remote-config.json`` so that a restart without the platform
   comes up with the last good configuration;
4. reports ``applied_version`` and the error of a refused version
   (``POST /api/v1/gateways/{gateway}/config/status``). A refused version leaves the last good
   connectors running.

Browse requests found in a poll answer are run with the OPC UA browse function in their own
task and the nodes posted back (``POST /api/v1/gateways/{gateway}/browse/{id}/result``).

Device entries of the platform's sections may carry ``device_type`` (which the platform uses to
register the device); the gateway strips it before validating, since the connectors' own models
do not know it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from shopfloor.edge.config import (
    ConnectorSection,
    EdgeConfigError,
    HttpUplinkConfig,
    RemoteConfig,
    parse_edge_config,
)

if TYPE_CHECKING:
    from shopfloor.edge.runtime import Gateway

__all__ = ["SAVED_FILE", "RemoteSync", "strip_device_types", "validate_remote"]

log = logging.getLogger(__name__)

SAVED_FILE = "remote-config.json"
MAX_BROWSE_TAGS = 10_000  # what one browse result may carry to the platform
BROWSE_TIMEOUT_S = 60.0


def strip_device_types(section: Any) -> Any:
    """A copy of a connector section without the ``device_type`` of its device entries (any
    dict in a ``devices`` list): platform metadata the connectors' models would refuse."""
    if not isinstance(section, dict):
        return section
    out: dict[str, Any] = {}
    for key, value in section.items():
        if key == "devices" and isinstance(value, list):
            out[key] = [
                {k: strip_device_types(v) for k, v in d.items() if k != "device_type"}
                if isinstance(d, dict)
                else d
                for d in value
            ]
        elif isinstance(value, list):
            out[key] = [strip_device_types(v) for v in value]
        else:
            out[key] = strip_device_types(value)
    return out


def validate_remote(
    gateway_name: str, connectors: Any, source: str = "platform config"
) -> list[ConnectorSection]:
    """The validated sections of a platform config; EdgeConfigError naming
    ``connectors[i]...`` (with ``source`` in place of the file name) when one is wrong."""
    if not isinstance(connectors, list):
        raise EdgeConfigError([], source)  # pragma: no cover - the platform always sends a list
    doc = {
        "name": gateway_name,
        # The uplink is the gateway's own business; a placeholder lets the parser run.
        "uplink": {"type": "http", "url": "http://remote.invalid"},
        "connectors": [strip_device_types(c) for c in connectors],
    }
    try:
        return parse_edge_config(doc).connectors
    except EdgeConfigError as exc:
        raise EdgeConfigError(exc.issues, source) from None


class RemoteSync:
    """The gateway's side of remote configuration (one task plus one per browse request)."""

    def __init__(self, gateway: Gateway, config: RemoteConfig) -> None:
        self.gw = gateway
        self.config = config
        self.name = config.gateway or gateway.config.name
        self.path = gateway.config.data_dir / SAVED_FILE
        self.applied_version = 0  # the version the remote connectors are from
        self.seen_version = 0  # the newest version tried (applied or refused)
        self.error: str | None = None  # why seen_version was refused
        self.connected = False
        self.last_poll_ns: int | None = None
        self.last_poll_error: str | None = None
        self.polls = 0
        self.browses = 0
        self._client: httpx.AsyncClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._browsing: dict[str, asyncio.Task[None]] = {}

    # -- connection --------------------------------------------------------------------------
    def _url_and_key(self) -> tuple[str, str]:
        cfg, uplink = self.config, self.gw.config.uplink
        url = cfg.url or (uplink.url if isinstance(uplink, HttpUplinkConfig) else None)
        if url is None:  # parse_edge_config refuses this; a hand-made config may not
            raise ValueError("remote: give url (the uplink is not http)")
        if cfg.api_key is not None:
            return url, cfg.api_key.get_secret_value()
        if cfg.api_key_file is not None:
            return url, cfg.api_key_file.read_text().strip()
        if isinstance(uplink, HttpUplinkConfig):
            return url, uplink.key()
        raise ValueError("remote: give api_key or api_key_file (the uplink is not http)")

    def _verify(self) -> bool | ssl.SSLContext:
        if self.config.ca_file is not None:
            return ssl.create_default_context(cafile=str(self.config.ca_file))
        return self.config.verify_tls

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            url, key = self._url_and_key()
            self._client = httpx.AsyncClient(
                base_url=f"{url}/api/v1/gateways/{self.name}",
                headers={"Authorization": f"Bearer {key}"},
                timeout=self.config.timeout,
                verify=self._verify(),
            )
        return self._client

    # -- status ------------------------------------------------------------------------------
    @property
    def sync(self) -> str:
        if self.error is not None:
            return "error"
        if self.last_poll_ns is None:
            return "never_polled"
        return "in_sync" if self.applied_version == self.seen_version else "pending"

    def status(self) -> dict[str, Any]:
        return {
            "gateway": self.name,
            "applied_version": self.applied_version,
            "seen_version": self.seen_version,
            "sync": self.sync,
            "error": self.error,
            "connected": self.connected,
            "last_poll_ns": self.last_poll_ns,
            "last_poll_error": self.last_poll_error,
            "connectors": sorted(s.name for s in self.gw.slots if s.remote),
            "browse_requests_done": self.browses,
        }

    # -- the saved configuration -------------------------------------------------------------
    async def load_saved(self) -> None:
        """Apply the configuration saved by the last run, if any (before connectors start)."""
        try:
            doc = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, orjson.JSONDecodeError) as exc:
            log.error("remote: cannot read %s (%s); waiting for the platform", self.path, exc)
            return
        try:
            version = int(doc["version"])
            sections = validate_remote(self.name, doc["connectors"], str(self.path))
            await self.gw.apply_remote(sections)
        except (KeyError, TypeError, ValueError) as exc:  # EdgeConfigError is a ValueError
            log.error("remote: the saved config %s is not usable: %s", self.path, exc)
            return
        self.applied_version = self.seen_version = version
        log.info("remote: config version %d from %s", version, self.path)

    def _save(self, version: int, connectors: list[Any]) -> None:
        # It holds the connectors' secrets as edge.yaml does: readable by the gateway alone.
        data = orjson.dumps({"version": version, "connectors": connectors})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    # -- life cycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="remote-config")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._browsing.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    async def _loop(self) -> None:
        # Say at once what runs (the saved config, or nothing): the first poll may wait.
        with contextlib.suppress(Exception):
            await self._report()
        while True:
            try:
                doc = await self._poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.connected = False
                msg = str(exc) or type(exc).__name__
                if msg != self.last_poll_error:
                    log.warning("remote: polling the platform failed: %s", msg)
                self.last_poll_error = msg
                await asyncio.sleep(self.config.retry_s)
                continue
            self.connected = True
            self.last_poll_error = None
            self.last_poll_ns = time.time_ns()
            self.polls += 1
            for request in doc.get("browse_requests") or []:
                self._start_browse(request)
            version = int(doc.get("version", 0))
            if version != self.seen_version:
                await self._apply(version, list(doc.get("connectors") or []))
            try:
                await self._report()  # also the heartbeat behind the platform's last_seen
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("remote: reporting to the platform failed: %s", exc)

    async def _poll(self) -> dict[str, Any]:
        client = self._http()
        params: dict[str, str | int | float] = {
            "wait_s": self.config.poll_s,
            "after_version": self.seen_version,
            "secrets": "reveal",
        }
        resp = await client.get(
            "/config", params=params, timeout=self.config.poll_s + self.config.timeout
        )
        if resp.status_code != 200:
            raise RuntimeError(f"platform answered {resp.status_code}: {resp.text[:300]}")
        doc = resp.json()
        if not isinstance(doc, dict):
            raise RuntimeError("platform answered something other than a config document")
        return doc

    async def _apply(self, version: int, connectors: list[Any]) -> None:
        self.seen_version = version
        try:
            sections = validate_remote(self.name, connectors, f"platform config v{version}")
            result = await self.gw.apply_remote(sections)
        except ValueError as exc:  # EdgeConfigError too; the last good connectors run on
            self.error = str(exc)
            log.error("remote: config version %d refused: %s", version, exc)
            return
        self.applied_version = version
        self.error = None
        try:
            self._save(version, connectors)
        except OSError as exc:  # runs now; only a restart without the platform would miss it
            log.error("remote: cannot save %s: %s", self.path, exc)
        log.info(
            "remote: config version %d applied (%d started, %d restarted, %d stopped)",
            version,
            len(result.started),
            len(result.restarted),
            len(result.stopped),
        )

    async def _report(self) -> None:
        body = {"applied_version": self.applied_version, "error": self.error}
        resp = await self._http().post("/config/status", json=body)
        if resp.status_code != 200:
            raise RuntimeError(f"platform answered {resp.status_code}: {resp.text[:300]}")

    # -- browse --------------------------------------------------------------------------------
    def _start_browse(self, request: dict[str, Any]) -> None:
        rid = str(request.get("id"))
        if rid in self._browsing:
            return
        task = asyncio.create_task(self._browse(rid, request), name=f"browse:{rid}")
        self._browsing[rid] = task
        task.add_done_callback(lambda _t: self._browsing.pop(rid, None))

    def _credentials(self, endpoint: str) -> dict[str, Any]:
        """Security and login of a running OPC UA connector of the same endpoint, if any: a
        server that needs them for the connector needs them for browsing too."""
        for slot in self.gw.slots:
            cfg = slot.config
            if slot.domain == "opcua" and getattr(cfg, "endpoint", None) == endpoint:
                password = getattr(cfg, "password", None)
                if password is not None and hasattr(password, "get_secret_value"):
                    password = password.get_secret_value()
                return {
                    "security": getattr(cfg, "security", None),
                    "username": getattr(cfg, "username", None),
                    "password": password,
                }
        return {}

    async def _browse(self, rid: str, request: dict[str, Any]) -> None:
        endpoint = str(request.get("endpoint"))
        body: dict[str, Any]
        try:
            from shopfloor.edge.connectors.opcua.browse import browse

            tags = await asyncio.wait_for(
                browse(
                    endpoint,
                    root=request.get("root"),
                    max_depth=int(request.get("max_depth") or 3),
                    max_tags=MAX_BROWSE_TAGS,
                    **self._credentials(endpoint),
                ),
                BROWSE_TIMEOUT_S,
            )
            body = {
                "nodes": [
                    {
                        "node_id": t.node_id,
                        "browse_path": t.browse_path,
                        "name": t.browse_path.rpartition("/")[2],
                        "data_type": t.data_type,
                        "writable": "w" in t.access,
                    }
                    for t in tags
                ]
            }
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            body = {"error": f"browsing {endpoint} took longer than {BROWSE_TIMEOUT_S:.0f} s"}
        except Exception as exc:
            try:
                from shopfloor.edge.connectors.opcua.session import describe_error

                reason = describe_error(exc)
            except Exception:
                reason = f"{type(exc).__name__}: {exc}"
            body = {"error": f"cannot browse {endpoint}: {reason}"}
        self.browses += 1
        try:
            resp = await self._http().post(f"/browse/{rid}/result", json=body)
            if resp.status_code >= 300:
                log.warning("remote: browse result %s refused: %d", rid, resp.status_code)
        except httpx.HTTPError as exc:
            log.warning("remote: cannot post browse result %s: %s", rid, exc)


def saved_config(data_dir: Path) -> dict[str, Any] | None:
    """The saved remote configuration of a gateway's data dir (``shopfloor edge status``)."""
    try:
        doc = orjson.loads((data_dir / SAVED_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None
