"""What a running gateway tells the outside: a status JSON file and Prometheus metrics.

The status file is rewritten atomically (temporary file + rename) every ``status.interval``,
so ``shopfloor edge status`` (or any monitoring script) never reads half a file. The metrics
are served on ``127.0.0.1:<status.metrics_port>`` by a tiny asyncio HTTP responder, to keep the
gateway free of a web framework; both come from the same :func:`build_status` document.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from shopfloor.edge.runtime import Gateway

__all__ = [
    "StatusReporter",
    "build_status",
    "outage_estimate_s",
    "read_status",
    "render_metrics",
    "write_atomic",
]

log = logging.getLogger(__name__)

DEFAULT_BYTES_PER_POINT = 32.0  # before the buffer has held anything to measure it on


def _as_dict(stats: Any) -> dict[str, Any]:
    if isinstance(stats, dict):
        return dict(stats)
    if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return dataclasses.asdict(stats)
    if hasattr(stats, "_asdict"):
        return dict(stats._asdict())
    return dict(vars(stats))


def build_status(gw: Gateway, rates: dict[str, float] | None = None) -> dict[str, Any]:
    """The gateway's state as one JSON-able document."""
    now = time.time_ns()
    buffer = _as_dict(gw.buffer.stats())
    depth_p, depth_b = buffer.get("depth_points") or 0, buffer.get("depth_bytes") or 0
    if depth_p:
        buffer["bytes_per_point"] = depth_b / depth_p
    uplink = gw.uplink
    up: dict[str, Any] = {
        "type": gw.config.uplink.type,
        "connected": bool(uplink.connected),
        "backlog": gw.backlog,
        "batches_sent": gw.batches_out,
        "send_failures": gw.send_failures,
        "last_error": gw.last_send_error,
    }
    extra = getattr(uplink, "stats", None)
    if isinstance(extra, dict):
        up["details"] = extra
    connectors: dict[str, Any] = {}
    for slot in gw.slots:
        try:
            st = slot.connector.status() if slot.connector is not None else {}
        except Exception as exc:  # a status() bug must not stop the report
            st = {"error": f"status() failed: {type(exc).__name__}: {exc}"}
        connectors[slot.name] = {
            "type": slot.domain,
            "remote": slot.remote,
            "running": slot.running,
            "restarts": slot.restarts,
            "last_error": slot.last_error,
            "points_in": slot.points_in,
            "points_rejected": slot.points_rejected,
            "devices": sorted(slot.devices),
            "status": st,
        }
    return {
        "gateway": gw.config.name,
        "pid": os.getpid(),
        "written_at_ns": now,
        "started_at_ns": gw.started_ns,
        "uptime_s": (now - gw.started_ns) / 1e9,
        "points_in_total": gw.points_in,
        "points_out_total": gw.points_out,
        "rates": rates or {"points_in_per_s": 0.0, "points_out_per_s": 0.0},
        "buffer": buffer,
        "buffer_config": {
            "max_bytes": gw.config.buffer.max_bytes,
            "max_age_s": gw.config.buffer.max_age,
            "when_full": gw.config.buffer.when_full,
        },
        "uplink": up,
        "connectors": connectors,
        # Remote configuration (edge/remote.py): versions, sync state, last poll.
        "remote": gw.remote.status() if gw.remote is not None else None,
    }


def _dumps(doc: Any, indent: bool = False) -> bytes:
    opts = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    return orjson.dumps(doc, default=str, option=opts | (orjson.OPT_INDENT_2 if indent else 0))


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any]:
    doc = orjson.loads(path.read_bytes())
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a gateway status file")
    return doc


# --- Prometheus ------------------------------------------------------------------------------
def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(v: Any) -> str:
    if v is None:
        return "NaN"
    if isinstance(v, bool):
        return "1" if v else "0"
    return repr(float(v)) if isinstance(v, float) else str(int(v))


def render_metrics(doc: dict[str, Any]) -> str:
    """Prometheus text exposition (format 0.0.4) of a status document."""
    buf, up = doc.get("buffer", {}), doc.get("uplink", {})
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, Any]]) -> None:
        out.append(f"# HELP shopfloor_edge_{name} {help_}")
        out.append(f"# TYPE shopfloor_edge_{name} {kind}")
        out.extend(f"shopfloor_edge_{name}{labels} {_num(v)}" for labels, v in samples)

    metric(
        "buffer_depth_points",
        "gauge",
        "Points waiting in the buffer.",
        [("", buf.get("depth_points", 0))],
    )
    metric(
        "buffer_depth_bytes", "gauge", "Bytes the buffer holds.", [("", buf.get("depth_bytes", 0))]
    )
    metric(
        "buffer_max_bytes",
        "gauge",
        "Buffer size limit.",
        [("", doc.get("buffer_config", {}).get("max_bytes"))],
    )
    metric(
        "buffer_oldest_age_seconds",
        "gauge",
        "Age of the oldest point not yet delivered (0 when empty).",
        [("", buf.get("oldest_age_s") or 0.0)],
    )
    metric(
        "buffer_dropped_points_total",
        "counter",
        "Points the buffer dropped (full or too old).",
        [("", buf.get("dropped_points", 0))],
    )
    metric(
        "points_in_total",
        "counter",
        "Points connectors handed to the buffer.",
        [("", doc.get("points_in_total", 0))],
    )
    metric(
        "points_out_total",
        "counter",
        "Points the platform acknowledged.",
        [("", doc.get("points_out_total", 0))],
    )
    metric(
        "uplink_connected",
        "gauge",
        "1 when the last uplink exchange worked.",
        [("", bool(up.get("connected")))],
    )
    metric(
        "uplink_send_failures_total",
        "counter",
        "Failed sends (retried).",
        [("", up.get("send_failures", 0))],
    )
    quarantined = (up.get("details") or {}).get("quarantined_points", 0)
    metric(
        "uplink_quarantined_points_total",
        "counter",
        "Points the platform refused.",
        [("", quarantined)],
    )
    running, restarts, dev_fail, dev_conn = [], [], [], []
    for name, c in sorted(doc.get("connectors", {}).items()):
        lab = f'{{connector="{_esc(name)}"}}'
        running.append((lab, bool(c.get("running"))))
        restarts.append((lab, c.get("restarts", 0)))
        for dev, st in sorted(_devices(c.get("status") or {}).items()):
            dl = f'{{connector="{_esc(name)}",device="{_esc(dev)}"}}'
            dev_fail.append((dl, st.get("failed_total", st.get("failures", 0)) or 0))
            if "connected" in st:
                dev_conn.append((dl, bool(st["connected"])))
    metric("connector_running", "gauge", "1 while the connector task runs.", running)
    metric("connector_restarts_total", "counter", "Connector crashes and restarts.", restarts)
    metric("device_failures_total", "counter", "Failed polls per device.", dev_fail)
    metric("device_connected", "gauge", "1 while the device answers.", dev_conn)
    return "\n".join(out) + "\n"


def _devices(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    devices = status.get("devices", status)
    if not isinstance(devices, dict):
        return {}
    return {str(k): v for k, v in devices.items() if isinstance(v, dict)}


# --- outage estimate -------------------------------------------------------------------------
def outage_estimate_s(buffer: dict[str, Any], points_per_s: float, bytes_per_point: float) -> float:
    """Seconds of outage the buffer still covers at ``points_per_s`` before it drops data."""
    from shopfloor.edge.buffer import BufferStats, estimate_outage_s

    known: dict[str, Any] = {f.name: None for f in dataclasses.fields(BufferStats)}
    for name in ("depth_points", "depth_bytes", "records", "dropped_points"):
        known[name] = 0
    known.update(appended_points=0, forwarded_points=0)
    known.update({k: v for k, v in buffer.items() if k in known})
    return float(estimate_outage_s(BufferStats(**known), points_per_s, bytes_per_point))


# --- the reporter task -----------------------------------------------------------------------
class StatusReporter:
    """Writes the status file every interval and answers metrics scrapes."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.path = gw.config.status_file
        self.interval = gw.config.status.interval
        self.port = gw.config.status.metrics_port
        self._task: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._last = (time.monotonic(), 0, 0)
        self.rates = {"points_in_per_s": 0.0, "points_out_per_s": 0.0}
        self._stopped = False

    async def start(self) -> None:
        if self.port is not None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self._last = (time.monotonic(), self.gw.points_in, self.gw.points_out)
        self._task = asyncio.create_task(self._loop(), name="status")

    def _update_rates(self) -> None:
        t0, in0, out0 = self._last
        t = time.monotonic()
        if t - t0 >= 0.2:
            self.rates = {
                "points_in_per_s": (self.gw.points_in - in0) / (t - t0),
                "points_out_per_s": (self.gw.points_out - out0) / (t - t0),
            }
            self._last = (t, self.gw.points_in, self.gw.points_out)

    def write(self) -> None:
        self._update_rates()
        try:
            doc = build_status(self.gw, self.rates)
            doc["state"] = "stopped" if self._stopped else "running"
            write_atomic(self.path, _dumps(doc, indent=True))
        except OSError as exc:  # a full disk must not stop the gateway; the buffer says more
            log.warning("cannot write status file %s: %s", self.path, exc)

    async def _loop(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(self.interval)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b"/"
            if path.split(b"?")[0] in (b"/metrics", b"/"):
                status, ctype = b"200 OK", b"text/plain; version=0.0.4; charset=utf-8"
                body = render_metrics(build_status(self.gw, self.rates)).encode()
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"try /metrics\n"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._stopped = True
        with contextlib.suppress(RuntimeError):  # not started: nothing to report
            self.write()
