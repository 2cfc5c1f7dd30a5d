"""The HTTP uplink: buffered readings as columnar JSON batches to ``POST /api/v1/ingest``.

One :meth:`HttpUplink.send` is one request (the platform stores a batch all-or-nothing), so
a failed send can be repeated without writing anything twice. What the platform answers decides
what happens to the batch:

- 2xx: stored and durable; the runtime acknowledges it in the buffer.
- 408, 429, 5xx, no answer at all: :class:`UplinkError`, the batch stays buffered and is retried.
- 401, 403, 404: the gateway's key or URL is wrong, not the data: :class:`UplinkError` too, so
  nothing is lost while someone fixes the configuration.
- 413: the batch is split in halves and each is sent on its own.
- any other 4xx (typically 422): the platform refuses the data itself, and it would refuse it
  again forever. The batch is written to ``<data_dir>/quarantine/`` (the request body as it was
  sent, with the platform's error beside it) and counts as delivered, so one poisoned batch
  does not stop the gateway. The files can be fixed and posted again by hand.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from shopfloor.edge.config import HttpUplinkConfig
from shopfloor.edge.model import Reading
from shopfloor.edge.uplink import Uplink, UplinkError

__all__ = ["HttpUplink", "encode_batch"]

log = logging.getLogger(__name__)

INGEST_PATH = "/api/v1/ingest"
_RETRY_4XX = frozenset({401, 403, 404, 408, 429})


def _names(reading: Reading, cache: dict[tuple[str, tuple[str, ...]], list[str]]) -> list[str]:
    key = (reading.device, reading.signals)
    names = cache.get(key)
    if names is None:  # once per device layout, not per poll
        if len(cache) > 10_000:
            cache.clear()
        names = cache[key] = [f"{reading.device}/{s}" for s in reading.signals]
    return names


def encode_batch(
    readings: Sequence[Reading],
    *,
    drop_null: bool = False,
    cache: dict[tuple[str, tuple[str, ...]], list[str]] | None = None,
) -> tuple[bytes, int]:
    """The columnar JSON body of ``readings`` and its number of points.

    Text values go as strings; a NaN without text (a failed read, bad quality) goes as null, or
    is left out with ``drop_null`` for a platform that does not take null values yet.
    """
    names_cache = cache if cache is not None else {}
    signals: list[str] = []
    for r in readings:
        signals.extend(_names(r, names_cache))
    ts = np.concatenate([r.ts_ns for r in readings]) if readings else np.empty(0, np.int64)
    values = np.concatenate([r.values for r in readings]) if readings else np.empty(0)
    quality = np.concatenate([r.quality for r in readings]) if readings else np.empty(0, np.uint32)
    value: Any = values
    has_text = any(r.text is not None for r in readings)
    if has_text:
        value = values.tolist()
        offset = 0
        for r in readings:
            if r.text is not None:
                for i, t in enumerate(r.text):
                    if t is not None:
                        value[offset + i] = t
            offset += len(r)
    if drop_null:
        null = np.isnan(values)
        if has_text:
            null &= np.fromiter((not isinstance(v, str) for v in value), bool, len(value))
        if null.any():
            keep = ~null
            signals = [s for s, k in zip(signals, keep.tolist(), strict=True) if k]
            ts, quality = ts[keep], quality[keep]
            value = (
                [v for v, k in zip(value, keep.tolist(), strict=True) if k]
                if has_text
                else values[keep]
            )
    doc = {"signal": signals, "ts": ts, "ts_unit": "ns", "value": value, "quality": quality}
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), len(signals)


class HttpUplink(Uplink):
    """Sends to the platform over HTTP(S) with the tenant's API key. No commands come back."""

    def __init__(self, config: HttpUplinkConfig, *, data_dir: Path | None = None) -> None:
        super().__init__()
        self.config = config
        self.quarantine_dir = (data_dir or Path(".")) / "quarantine"
        self._client: httpx.AsyncClient | None = None
        self._connected = False
        self._names: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        # The platform may predate accepting null values of bad points; learnt from its answer.
        self._drop_null = False
        self.stats: dict[str, Any] = {
            "points_sent": 0,
            "requests": 0,
            "failures": 0,
            "quarantined_batches": 0,
            "quarantined_points": 0,
            "last_error": None,
            "last_ok_ns": None,
        }

    @property
    def connected(self) -> bool:
        return self._connected

    def _verify(self) -> bool | ssl.SSLContext:
        if self.config.ca_file is not None:  # httpx takes a context (a path is deprecated)
            return ssl.create_default_context(cafile=str(self.config.ca_file))
        return self.config.verify_tls

    async def start(self) -> None:
        if self._client is not None:
            return
        self._client = httpx.AsyncClient(
            base_url=self.config.url,
            headers={
                "Authorization": f"Bearer {self.config.key()}",
                "Content-Type": "application/json",
            },
            timeout=self.config.timeout,
            verify=self._verify(),
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._connected = False

    def _fail(self, message: str) -> UplinkError:
        self._connected = False
        self.stats["failures"] += 1
        if message != self.stats["last_error"]:
            log.warning("uplink: %s", message)
        self.stats["last_error"] = message
        return UplinkError(message)

    async def send(self, readings: Sequence[Reading], *, historical: bool) -> None:
        # HTTP ingest has no historical flag: timestamps alone place the points.
        if not readings:
            return
        await self._send(readings)

    async def _send(self, readings: Sequence[Reading]) -> None:
        if self._client is None:
            await self.start()
        assert self._client is not None
        body, n = encode_batch(readings, drop_null=self._drop_null, cache=self._names)
        if n == 0:
            return
        self.stats["requests"] += 1
        try:
            resp = await self._client.post(INGEST_PATH, content=body)
        except httpx.HTTPError as exc:
            raise self._fail(
                f"{self.config.url} unreachable: {type(exc).__name__}: {exc}"
            ) from None
        if resp.is_success:
            self._connected = True
            self.stats["points_sent"] += n
            self.stats["last_ok_ns"] = time.time_ns()
            self.stats["last_error"] = None
            return
        error = _error_of(resp)
        status = resp.status_code
        if status >= 500 or status in _RETRY_4XX:
            if status in (401, 403, 404):
                self._connected = False
                log.error(
                    "uplink: the platform answered %d: %s (check url and api_key)", status, error
                )
            raise self._fail(f"platform answered {status}: {error}")
        self._connected = True  # it answered: the platform is there, the data is the problem
        if status == 413 and sum(len(r) for r in readings) > 1:
            await self._send_halves(readings)
            return
        if status == 422 and not self._drop_null and "null" in error and _has_null(readings):
            log.warning("uplink: the platform does not take null values; bad points are left out")
            self._drop_null = True
            await self._send(readings)
            return
        self._quarantine(body, n, status, error)

    async def _send_halves(self, readings: Sequence[Reading]) -> None:
        parts: list[list[Reading]]
        if len(readings) == 1:  # one large reading: split its points
            r = readings[0]
            mid = len(r) // 2
            parts = [[_slice(r, 0, mid)], [_slice(r, mid, len(r))]]
        else:
            mid = len(readings) // 2
            parts = [list(readings[:mid]), list(readings[mid:])]
        for part in parts:
            await self._send(part)

    def _quarantine(self, body: bytes, n: int, status: int, error: str) -> None:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        stem = self.quarantine_dir / f"{time.time_ns()}-{os.getpid()}"
        meta = {"status": status, "error": error, "points": n, "url": self.config.url + INGEST_PATH}
        Path(f"{stem}.json").write_bytes(body)
        Path(f"{stem}.error.json").write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        self.stats["quarantined_batches"] += 1
        self.stats["quarantined_points"] += n
        log.error(
            "uplink: the platform REFUSED a batch of %d points (%d: %s); it was moved to %s.json "
            "and will not be retried",
            n,
            status,
            error,
            stem,
        )


def _error_of(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
        err = doc.get("error", doc) if isinstance(doc, dict) else doc
        if isinstance(err, dict) and "message" in err:
            field = err.get("field")
            return f"{field}: {err['message']}" if field else str(err["message"])
        return str(err)[:500]
    except ValueError:
        return resp.text[:500] or resp.reason_phrase


def _has_null(readings: Sequence[Reading]) -> bool:
    return any(bool(np.isnan(r.values).any()) for r in readings)


def _slice(r: Reading, a: int, b: int) -> Reading:
    return Reading(
        r.device,
        r.signals[a:b],
        r.ts_ns[a:b],
        r.values[a:b],
        r.quality[a:b],
        r.text[a:b] if r.text is not None else None,
        r.source_ts,
    )
