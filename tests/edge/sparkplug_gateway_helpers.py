"""Helpers of tests/edge/test_sparkplug_gateway.py: a deterministic test connector, the
gateway's configuration, and a Sparkplug "host" that decodes what a recorder received.

Run as ``python -m tests.edge.sparkplug_gateway_helpers EDGE_YAML`` (from the repository root)
it is ``shopfloor edge run`` with the test connector added to the installed ones, which the
entry points alone cannot offer.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.edge.connector import Connector, connector_class
from shopfloor.edge.model import Reading

from .sparkplug.helpers import Received, Recorder

GROUP, NODE = "plant1", "gw1"


# --- a test-only connector -------------------------------------------------------------------
class GridOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: str = "press-01"
    signals: int = Field(20, ge=1)
    period_s: float = Field(0.05, gt=0)
    count: int | None = None  # readings, then idle; None: until paused or cancelled
    log_file: Path | None = None  # one line "ts_ms" per reading the buffer accepted


def signal_names(n: int) -> tuple[str, ...]:
    return tuple(f"s{i:02d}" for i in range(n))


def grid_value(signal: str, ts_ms: int) -> float:
    """The value of ``signal`` at ``ts_ms``: known to the test without asking the connector."""
    return float(ts_ms % 1_000_000) + int(signal[1:]) / 32  # exact in a float64


class GridConnector(Connector):
    """One device, ``signals`` signals, one reading every ``period_s`` with known values.

    Timestamps are whole milliseconds (what a Sparkplug metric carries) and strictly increasing,
    so ``(device, signal, ts)`` names one point. ``produced`` (and the log file) lists the
    timestamp of every reading after the sink returned, i.e. after the buffer had it on disk.
    """

    domain = "grid"
    config_model = GridOptions

    def __init__(self, name: str, config: BaseModel, sink: Any) -> None:
        super().__init__(name, config, sink)
        self.opts: GridOptions = config  # type: ignore[assignment]
        self.produced: list[int] = []
        self.paused = False

    async def run(self) -> None:
        names = signal_names(self.opts.signals)
        log = self.opts.log_file.open("a") if self.opts.log_file else None
        try:
            last = 0
            while self.opts.count is None or len(self.produced) < self.opts.count:
                if not self.paused:
                    ts_ms = max(time.time_ns() // 1_000_000, last + 1)
                    values = [grid_value(s, ts_ms) for s in names]
                    await self.sink(Reading.at(self.opts.device, ts_ms * 1_000_000, names, values))
                    self.produced.append(ts_ms)
                    last = ts_ms
                    if log:
                        log.write(f"{ts_ms}\n")
                        log.flush()
                await asyncio.sleep(self.opts.period_s)
            await asyncio.Event().wait()
        finally:
            if log:
                log.close()


def lookup(domain: str) -> type[Connector]:
    return GridConnector if domain == "grid" else connector_class(domain)


def edge_doc(
    tmp: Path, port: int, connectors: list[dict[str, Any]], **sections: Any
) -> dict[str, Any]:
    """An edge.yaml document: Sparkplug to the test broker, short retries and reconnects."""
    uplink = {
        "type": "sparkplug",
        "host": "127.0.0.1",
        "port": port,
        "group_id": GROUP,
        "edge_node_id": NODE,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "connect_timeout_s": 3.0,
        "publish_timeout_s": 5.0,
        "max_metrics_per_message": 5000,
        **sections.pop("uplink", {}),
    }
    return {
        "name": "spb-gw",
        "data_dir": str(tmp / "edge-data"),
        "buffer": {"max_bytes": "64MiB", "fsync": "always"},
        "forwarder": {"batch_points": 1000, "retry_initial": 0.05, "retry_max": 0.5},
        "uplink": uplink,
        "status": {"interval": 0.2},
        "connectors": connectors,
        **sections,
    }


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_bytes(orjson.dumps(doc))  # JSON is YAML
    return path


# --- the host side: decode what the recorder got -----------------------------------------------
@dataclass(frozen=True)
class Point:
    device: str
    signal: str
    ts_ms: int
    value: Any
    historical: bool
    message: int  # index of its DDATA in the (deduplicated) arrival order

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.device, self.signal, self.ts_ms)


@dataclass
class Decoded:
    messages: list[Received]  # arrival order, broker redeliveries removed
    redeliveries: int  # byte-identical copies the broker delivered again (QoS 1, DUP)
    points: list[Point]  # every DDATA metric, in arrival order
    seqs: list[int | None]  # per message; None for NDEATH
    bd_seqs: dict[int, int]  # message index -> bdSeq, for NBIRTH and NDEATH

    def of(self, kind: str) -> list[int]:
        return [i for i, m in enumerate(self.messages) if m.kind == kind]

    def duplicates(self) -> Counter[tuple[str, str, int]]:
        seen = Counter(p.key for p in self.points)
        return Counter({k: n - 1 for k, n in seen.items() if n > 1})


def decode(spb: Any, received: Sequence[Received]) -> Decoded:
    """DDATA resolved with the DBIRTH of its device that arrived last before it.

    A message the broker delivers twice (its PUBACK from the recorder was lost in a restart)
    arrives with identical bytes; the gateway can never publish identical bytes twice, since
    each message it builds has its own seq and payload timestamp. Only those copies are removed.
    """
    births: dict[str, Any] = {}
    seen: set[tuple[str, bytes]] = set()
    out = Decoded([], 0, [], [], {})
    for msg in received:
        if (msg.topic, msg.payload) in seen:
            out.redeliveries += 1
            continue
        seen.add((msg.topic, msg.payload))
        i = len(out.messages)
        out.messages.append(msg)
        parts = msg.topic.split("/")
        kind = msg.kind
        if kind in ("NBIRTH", "NDEATH"):
            if kind == "NBIRTH":
                nbirth = spb.NBirth.decode(msg.payload)
                out.bd_seqs[i] = {m.name: m.value for m in nbirth.metrics}["bdSeq"]
                out.seqs.append(nbirth.seq)
            else:
                out.bd_seqs[i] = spb.NDeath.decode(msg.payload).bd_seq_metric.value
                out.seqs.append(None)
        elif kind == "DBIRTH":
            births[parts[4]] = birth = spb.DBirth.decode(msg.payload)
            out.seqs.append(birth.seq)
        elif kind == "DDATA":
            data = spb.DData.decode(msg.payload, birth=births[parts[4]])
            out.seqs.append(data.seq)
            for m in data.metrics:
                out.points.append(
                    Point(parts[4], m.name, m.timestamp, m.value, bool(m.is_historical), i)
                )
        else:
            out.seqs.append(None)
    return out


def wait_for_points(
    recorder: Recorder,
    spb: Any,
    expected: set[tuple[str, str, int]],
    wait_s: float = 20.0,
) -> Decoded:
    """Poll the recorder until every expected point arrived (blocking; run it in a thread)."""
    deadline = time.monotonic() + wait_s
    while True:
        decoded = decode(spb, list(recorder.messages))
        missing = expected - {p.key for p in decoded.points}
        if not missing:
            return decoded
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(missing)} of {len(expected)} points never arrived, e.g. {min(missing)}"
            )
        time.sleep(0.25)


def main(argv: list[str]) -> None:
    from shopfloor.edge.config import load_edge_config
    from shopfloor.edge.runtime import run_gateway

    asyncio.run(run_gateway(load_edge_config(argv[0], lookup=lookup)))


if __name__ == "__main__":
    main(sys.argv[1:])
