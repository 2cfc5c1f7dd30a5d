"""Edge Modbus benchmark: 50 devices polled over Modbus TCP, one of them dead.

The devices are pymodbus' own server in a separate process
(``python -m shopfloor.edge.connectors.modbus.simserver``), so they do not share the
connector's CPU. Every device has the same table of 114 points: floats, scaled integers, 32-bit
counters, 16 bits of a status word, a 16-byte string, 40 plain registers, 16 coils and 16
discrete inputs; the connector reads them in 4 requests per poll (100 registers, 32 bits).

Two scenarios run in turn, each for ``--duration`` seconds with every device polled every
``--period`` seconds:

- ``own``: every device on its own TCP connection; the dead one is a server that accepts the
  connection and never answers (so each attempt costs a full timeout, not a quick refusal);
- ``shared``: all devices as unit ids behind one TCP connection (a gateway); one unit id never
  gets an answer, and it holds the shared line for its timeout on every attempt.

Drift = max over the live devices of |mean observed period - configured| / configured * 100,
the mean period taken from the timestamps of the device's readings (the moment its first
request of each poll went out). Live readings are checked: all good quality, and a register
holds the value the server put there for that unit (so no answer went to the wrong device).

Run: ``shopfloor bench edge-modbus [--quick]`` or ``python -m benchmarks.edge_modbus [--quick]``.
The last line of stdout is one JSON object; see benchmarks/README.md for the keys.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import emit, progress
from shopfloor.core.quality import GOOD
from shopfloor.edge.connectors.modbus import ModbusConfig, ModbusConnector
from shopfloor.edge.connectors.modbus.simserver import fill_pattern, period_drift_pct
from shopfloor.edge.model import Reading

TARGETS = {
    "period_drift_pct": ("<=", 10.0),
    "shared_conn_period_drift_pct": ("<=", 10.0),
}
CHECK_ADDRESS = 60  # a plain uint16 point: its value must be fill_pattern(unit)[60]


def points() -> list[dict[str, Any]]:
    p: list[dict[str, Any]] = []
    p += [
        {"name": f"f{i}", "table": "holding", "address": 2 * i, "type": "float32"}
        for i in range(10)
    ]
    p += [
        {"name": f"t{i}", "table": "holding", "address": 20 + i, "type": "int16", "scale": 0.1}
        for i in range(10)
    ]
    p += [
        {"name": f"c{i}", "table": "holding", "address": 30 + 2 * i, "type": "uint32"}
        for i in range(5)
    ]
    p += [
        {"name": f"s{b}", "table": "holding", "address": 40, "type": "bool", "bit": b}
        for b in range(16)
    ]
    p += [{"name": "serial", "table": "holding", "address": 48, "type": "string", "length": 16}]
    p += [{"name": f"r{i}", "table": "holding", "address": 60 + i} for i in range(20)]
    p += [{"name": f"i{i}", "table": "input", "address": i} for i in range(20)]
    p += [{"name": f"q{i}", "table": "coil", "address": i} for i in range(16)]
    p += [{"name": f"d{i}", "table": "discrete", "address": i} for i in range(16)]
    return p


def device(unit: int, period_s: float, timeout_s: float) -> dict[str, Any]:
    return {
        "name": f"dev{unit:03d}",
        "unit_id": unit,
        "period_s": period_s,
        "timeout_s": timeout_s,
        "backoff_max_s": 5.0,
        "points": points(),
    }


def connection(name: str, port: int, devices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "transport": "tcp",
        "host": "127.0.0.1",
        "port": port,
        "connect_timeout_s": 1.0,
        "devices": devices,
    }


def scenario_config(
    shared: bool, n: int, port: int, silent_port: int, period_s: float, timeout_s: float
) -> ModbusConfig:
    devices = [device(u, period_s, timeout_s) for u in range(1, n + 1)]
    if shared:  # unit n is the silent one on the server
        conns = [connection("gateway", port, devices)]
    else:
        conns = [connection(f"c{u:03d}", port, [devices[u - 1]]) for u in range(1, n)]
        conns.append(connection(f"c{n:03d}", silent_port, [devices[-1]]))
    return ModbusConfig.model_validate({"connections": conns})


async def run_scenario(cfg: ModbusConfig, duration_s: float) -> tuple[list[Reading], float, Any]:
    readings: list[Reading] = []

    async def sink(r: Reading) -> None:
        readings.append(r)

    conn = ModbusConnector("bench", cfg, sink)
    task = asyncio.create_task(conn.run())
    t0 = time.perf_counter()
    await asyncio.sleep(duration_s)
    status = conn.status()
    elapsed = time.perf_counter() - t0
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return readings, elapsed, (conn, status)


def summarise(
    readings: list[Reading],
    elapsed: float,
    conn: ModbusConnector,
    status: Any,
    n: int,
    period_s: float,
) -> dict[str, Any]:
    dead = f"dev{n:03d}"
    by_dev: dict[str, list[Reading]] = {}
    for r in readings:
        by_dev.setdefault(r.device, []).append(r)
    drifts, bad, registers, wrong = [], 0, 0, 0
    for name, d in conn.devices.items():
        got = by_dev.get(name, [])
        if name == dead:
            continue
        ok = [r for r in got if (r.quality == GOOD).all()]
        bad += len(got) - len(ok)
        registers += len(ok) * d.plan.registers
        drifts.append(period_drift_pct([r.ts_ns[0] for r in got], period_s))
        if ok:
            expect = fill_pattern(d.config.unit_id, CHECK_ADDRESS + 1)[CHECK_ADDRESS]
            wrong += int(ok[-1].values[ok[-1].signals.index("r0")] != expect)
    devs = status["devices"]
    return {
        "drift_pct": round(max(drifts), 3),
        "registers_per_s": round(registers / elapsed),
        "polls": len(readings),
        "live_bad_readings": bad,
        "wrong_values": wrong,
        "overruns": sum(s["overruns"] for k, s in devs.items() if k != dead),
        "dead_attempts": len(by_dev.get(dead, [])),
        "requests": sum(c["requests"] for c in status["connections"].values()),
        "timeouts": sum(c["timeouts"] for c in status["connections"].values()),
        "elapsed_s": elapsed,
    }


def start_server(n: int) -> tuple[subprocess.Popen[str], int, int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shopfloor.edge.connectors.modbus.simserver",
            "--units",
            f"1-{n}",
            "--silent",
            str(n),
            "--size",
            "200",
            "--fill",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    if not line or line[0] != "READY":
        proc.kill()
        raise RuntimeError(f"the simulated Modbus server did not start: {line}")
    return proc, int(line[1]), int(line[2])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    n, period, timeout = args.devices, args.period, args.timeout
    duration = args.duration or (10.0 if args.quick else 30.0)
    proc, port, silent_port = start_server(n)
    try:
        out: dict[str, dict[str, Any]] = {}
        for name, shared in (("own", False), ("shared", True)):
            progress(f"{name}: {n} devices, 1 dead, period {period} s, {duration} s")
            cfg = scenario_config(shared, n, port, silent_port, period, timeout)
            readings, elapsed, (conn, status) = await run_scenario(cfg, duration)
            out[name] = summarise(readings, elapsed, conn, status, n, period)
            progress(f"{name}: {out[name]}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    own, shared_ = out["own"], out["shared"]
    regs_per_poll = next(iter(conn.devices.values())).plan.registers
    result: dict[str, Any] = {
        "benchmark": "edge-modbus",
        "quick": bool(args.quick),
        "devices": n,
        "dead_devices": 1,
        "period_s": period,
        "timeout_s": timeout,
        "duration_s": round(own["elapsed_s"] + shared_["elapsed_s"], 1),
        "points_per_device": len(points()),
        "requests_per_poll": len(next(iter(conn.devices.values())).plan.blocks),
        "registers_per_poll": regs_per_poll,
        "registers_per_s": own["registers_per_s"],
        "period_drift_pct": own["drift_pct"],
        "shared_conn_period_drift_pct": shared_["drift_pct"],
        "shared_conn_registers_per_s": shared_["registers_per_s"],
        "ideal_registers_per_s": round((n - 1) * regs_per_poll / period),
    }
    for key in (
        "live_bad_readings",
        "wrong_values",
        "overruns",
        "dead_attempts",
        "requests",
        "timeouts",
    ):
        result[key] = own[key]
        result[f"shared_conn_{key}"] = shared_[key]
    result["targets_met"] = {
        key: (result[key] >= limit if op == ">=" else result[key] <= limit)
        for key, (op, limit) in TARGETS.items()
    }
    if (
        own["live_bad_readings"]
        or shared_["live_bad_readings"]
        or own["wrong_values"]
        or shared_["wrong_values"]
    ):
        raise RuntimeError(f"live devices gave bad or wrong readings: {result}")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="shopfloor bench edge-modbus", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10 s per scenario; well under 60 s")
    ap.add_argument("--duration", type=float, help="seconds per scenario (default 30, quick 10)")
    ap.add_argument("--devices", type=int, default=50, help="devices, the last one dead")
    ap.add_argument("--period", type=float, default=0.2, help="poll period of every device")
    ap.add_argument("--timeout", type=float, default=0.1, help="request timeout of every device")
    ap.add_argument("--data-dir", type=Path, help="accepted for symmetry; nothing is written")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    result = asyncio.run(run(args))
    result["elapsed_s"] = round(time.perf_counter() - t, 1)
    return emit(result)


if __name__ == "__main__":
    main()
