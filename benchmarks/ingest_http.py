"""HTTP ingest benchmark: durable end-to-end ingest of 1,000-point JSON batches.

The real platform server (``shopfloor.api.app.create_app`` on uvicorn, one worker) runs in a
subprocess; a load generator in other processes (wrk, or Python client processes when wrk is
not installed) POSTs columnar JSON batches of 1,000 points to ``/api/v1/ingest``. Each 200
means the batch is committed. The ceiling is the same requests against a server on the same
stack (uvicorn + FastAPI, same response class) whose handler only reads and decodes the body.

Run: ``shopfloor bench ingest-http [--quick]`` or ``python -m benchmarks.ingest_http``.
The last line of stdout is one JSON object; see benchmarks/README.md for the keys.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from fastapi import FastAPI

from benchmarks import emit, progress

INGEST_PATH = "/api/v1/ingest"
DEVICE = "bench-dev"
N_SIGNALS = 100  # per body: 100 signals x 10 timestamps = 1,000 points
N_STEPS = 10
N_BODIES = 64  # distinct bodies, sent in turn (a resend overwrites: last write wins)
TARGET_POINTS_PER_S = 1_000_000
ROOT = Path(__file__).resolve().parents[1]

_WRK_LUA = r"""
local reqs = {}
local i = 0
function init(args)
  local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. args[2]}
  for line in io.lines(args[1]) do
    reqs[#reqs + 1] = wrk.format("POST", "@PATH@", headers, line)
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
  i = math.random(#reqs)
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
""".replace("@PATH@", INGEST_PATH)


# ---- the servers (run in a subprocess) ------------------------------------------------------


def _decode_only_app() -> Any:
    """The ceiling: the platform's own ingest front (a bare ASGI handler before FastAPI, the same
    body reading, decoding and response writing) minus authentication and storage."""
    from shopfloor.api.ingest_endpoint import _read_body, _respond
    from shopfloor.api.responses import JSON
    from shopfloor.ingest.decode import decode_json

    app = FastAPI(default_response_class=JSON)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def front(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == INGEST_PATH and scope["method"] == "POST":
            cols = decode_json(await _read_body(receive, 64 * 1024 * 1024), 1_000_000)
            await _respond(send, 200, {"accepted": len(cols)})
            return
        await app(scope, receive, send)

    return front


def serve(kind: str, data_dir: Path, port: int) -> None:
    import uvicorn

    from shopfloor.api.server import GC_THRESHOLDS, run_server
    from shopfloor.core.config import Settings

    if kind == "platform":  # exactly as `shopfloor up` runs it
        run_server(Settings(data_dir=data_dir, http_host="127.0.0.1", http_port=port))
        return
    app = _decode_only_app()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)  # the ceiling gets the same tuning
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Server:
    def __init__(self, kind: str, data_dir: Path) -> None:
        self.kind = kind
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH", "")])])
        cmd = [sys.executable, "-m", "benchmarks.ingest_http", "--serve", kind]
        cmd += ["--data-dir", str(data_dir), "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sys.stderr)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{kind} server did not start in 60 s")
            time.sleep(0.2)

    def stop(self) -> int:
        """Graceful stop (SIGINT: uvicorn drains, the lifespan closes the historian)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"{self.kind} server did not stop in 60 s") from None
        return self.proc.returncode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- payloads -------------------------------------------------------------------------------


FORMS = ("frame", "columnar")


def make_bodies(n_bodies: int, form: str = "frame", seed: int = 3) -> tuple[list[bytes], int, int]:
    """Distinct bodies of 100 signals x 10 seconds; returns them and their ms range.

    ``columnar``: parallel signal / ts / value arrays, one entry per point, timestamps with
    +-5 ms jitter per point. ``frame``: the 10 poll times once, then one array of 10 values per
    signal (``{"ts": [...], "values": {"s000": [...], ...}}``), as a poller reading all its tags
    each cycle sends them.
    """
    rng = np.random.default_rng(seed)
    start_ms = (int(time.time()) - 3600) * 1000
    names = [f"s{i:03d}" for _ in range(N_STEPS) for i in range(N_SIGNALS)]
    bodies = []
    for b in range(n_bodies):
        if form == "frame":
            poll = start_ms + (b * N_STEPS + np.arange(N_STEPS)) * 1000
            poll = poll + rng.integers(-5, 6, size=N_STEPS)
            grid = np.round(rng.normal(50.0, 10.0, size=(N_SIGNALS, N_STEPS)), 2)
            values = {f"s{i:03d}": grid[i].tolist() for i in range(N_SIGNALS)}
            doc: dict[str, Any] = {"device": DEVICE, "ts": poll.tolist(), "values": values}
        else:
            ts = start_ms + (b * N_STEPS + np.repeat(np.arange(N_STEPS), N_SIGNALS)) * 1000
            ts = ts + rng.integers(-5, 6, size=len(ts))
            vals = np.round(rng.normal(50.0, 10.0, size=len(ts)), 2)
            doc = {"device": DEVICE, "signal": names, "ts": ts.tolist(), "value": vals.tolist()}
        bodies.append(orjson.dumps(doc))
    return bodies, start_ms - 1000, start_ms + (n_bodies * N_STEPS + 1) * 1000


# ---- load generators ------------------------------------------------------------------------


def run_wrk(
    url: str, key: str, bodies_file: Path, threads: int, conns: int, secs: int
) -> dict[str, Any]:
    script = bodies_file.with_name("ingest.lua")
    script.write_text(_WRK_LUA)
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "10s"]
    cmd += ["-s", str(script), url + INGEST_PATH, "--", str(bodies_file), key]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=secs + 60)
    m = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no summary:\n{out.stdout}\n{out.stderr}")
    res: dict[str, Any] = orjson.loads(m.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out.stdout)
    res["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    res["errors"] = res["non_2xx"] + sum(
        res[k] for k in ("connect", "read", "write", "status", "timeout")
    )
    res["requests_per_s"] = res["requests"] / (res["duration_us"] / 1e6)
    return res


def _client_proc(
    port: int, key: str, bodies: list[bytes], threads: int, secs: float, q: Any
) -> None:
    import http.client

    counts = [0, 0]  # 2xx, other
    lock = threading.Lock()
    stop_at = time.monotonic() + secs
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    def loop(k: int) -> None:
        con = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        ok = bad = 0
        i = k
        while time.monotonic() < stop_at:
            con.request("POST", INGEST_PATH, body=bodies[i % len(bodies)], headers=headers)
            r = con.getresponse()
            r.read()
            if 200 <= r.status < 300:
                ok += 1
            else:
                bad += 1
            i += 1
        con.close()
        with lock:
            counts[0] += ok
            counts[1] += bad

    ts = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    q.put(tuple(counts))


def run_python_clients(
    port: int, key: str, bodies: list[bytes], procs: int, conns: int, secs: int
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    per = max(1, conns // procs)
    ps = [
        ctx.Process(target=_client_proc, args=(port, key, bodies, per, secs, q))
        for _ in range(procs)
    ]
    t = time.perf_counter()
    for p in ps:
        p.start()
    got = [q.get(timeout=secs + 120) for _ in ps]
    elapsed = time.perf_counter() - t
    for p in ps:
        p.join()
    ok, bad = sum(g[0] for g in got), sum(g[1] for g in got)
    return {
        "requests": ok + bad,
        "non_2xx": bad,
        "errors": bad,
        "requests_per_s": ok / elapsed,
        "duration_us": int(elapsed * 1e6),
    }


# ---- the run --------------------------------------------------------------------------------


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(f"ingest-http benchmark: {what}")


def _load(
    server: Server, key: str, bodies: list[bytes], bodies_file: Path, a: Any
) -> dict[str, Any]:
    r = httpx.post(
        server.url + INGEST_PATH,
        content=bodies[0],
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
        timeout=30,
    )
    _check(r.status_code == 200, f"first request to {server.kind}: {r.status_code} {r.text}")
    _check(r.json().get("accepted") == 1000, f"first request to {server.kind}: {r.text}")
    if a.generator == "wrk":
        res = run_wrk(server.url, key, bodies_file, a.threads, a.connections, a.duration)
    else:
        res = run_python_clients(server.port, key, bodies, a.procs, a.connections, a.duration)
    _check(res["errors"] == 0, f"{server.kind}: {res['errors']} failed or non-2xx requests")
    progress(
        f"{server.kind}: {res['requests_per_s']:,.0f} requests/s "
        f"= {res['requests_per_s'] * 1000:,.0f} points/s, {res['requests']:,} requests"
    )
    return res


def run(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every form asked for; the headline keys are those of the first (the frame form)."""
    results = {form: run_form(a, work / form, form) for form in a.forms}
    result = dict(results[a.forms[0]])
    for form, r in results.items():
        for k in ("points_per_s", "ceiling_points_per_s", "ratio", "latency_p99_ms", "body_bytes"):
            if k in r:
                result[f"{form}_{k}"] = r[k]
    return result


def run_form(a: argparse.Namespace, work: Path, form: str) -> dict[str, Any]:
    from shopfloor.api.platform import Platform
    from shopfloor.core.config import Settings

    work.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=work / "data")
    plat = Platform(settings)
    try:
        tenant, key = plat.registry.create_tenant("bench")
    finally:
        plat.close()
    bodies, t_from, t_to = make_bodies(N_BODIES, form)
    bodies_file = work / "bodies.jsonl"
    bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
    progress(
        f"{form} form: {N_BODIES} distinct bodies of 1,000 points, {len(bodies[0]):,} bytes each; "
        f"load: {a.generator}, {a.connections} connections, {a.duration} s"
    )

    server = Server("platform", settings.data_dir)
    try:
        res = _load(server, key, bodies, bodies_file, a)
        health = httpx.get(server.url + "/health", timeout=30).json()
    finally:
        rc = server.stop()
    _check(rc == 0, f"platform server exited with {rc}")
    written = int(health["historian"]["points_written"])
    sent_low = (res["requests"] + 1) * 1000
    sent_high = (res["requests"] + 1 + a.connections) * 1000
    _check(
        sent_low <= written <= sent_high,
        f"server wrote {written:,} points; clients had {sent_low:,} acknowledged",
    )

    # The data must be there after a clean stop: every distinct point once.
    plat = Platform(settings)
    try:
        keys = [f"{DEVICE}/s{i:03d}" for i in range(N_SIGNALS)]
        ids = plat.registry.resolve_keys(tenant.id, keys)
        stored = plat.historian.query_raw(tenant.id, ids, t_from * 10**6, t_to * 10**6)
    finally:
        plat.close()
    # Each connection sends the bodies in turn from its own start, so once every connection
    # could have gone round once, every body has been acknowledged at least once.
    want = N_BODIES * 1000 if res["requests"] >= N_BODIES * a.connections else None
    _check(
        stored.num_rows == want if want else 1000 <= stored.num_rows <= N_BODIES * 1000,
        f"{stored.num_rows:,} distinct points stored, {N_BODIES * 1000:,} sent",
    )
    progress(f"verified: {written:,} points written, {stored.num_rows:,} distinct stored")

    ceiling_server = Server("decode-only", work / "unused")
    try:
        ceil = _load(ceiling_server, key, bodies, bodies_file, a)
    finally:
        ceiling_server.stop()

    pps = res["requests_per_s"] * 1000
    cpps = ceil["requests_per_s"] * 1000
    result: dict[str, Any] = {
        "benchmark": "ingest-http",
        "quick": a.quick,
        "form": form,
        "points_per_s": round(pps),
        "ceiling_points_per_s": round(cpps),
        "ratio": round(pps / cpps, 3),
        "requests_per_s": round(res["requests_per_s"], 1),
        "ceiling_requests_per_s": round(ceil["requests_per_s"], 1),
        "batch_points": 1000,
        "body_bytes": len(bodies[0]),
        "load_generator": a.generator,
        "connections": a.connections,
        "duration_s": a.duration,
        "requests": res["requests"],
        "ceiling_requests": ceil["requests"],
        "non_2xx": res["non_2xx"] + ceil["non_2xx"],
        "points_written": written,
        "distinct_points_stored": stored.num_rows,
    }
    if a.generator == "wrk":
        result["wrk_threads"] = a.threads
        result["latency_p50_ms"] = round(res["p50_us"] / 1000, 2)
        result["latency_p99_ms"] = round(res["p99_us"] / 1000, 2)
        result["ceiling_latency_p99_ms"] = round(ceil["p99_us"] / 1000, 2)
    result["targets_met"] = {"points_per_s": pps >= TARGET_POINTS_PER_S}
    if a.quick:
        result["targets_note"] = "targets apply to the full size run, not --quick"
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="shopfloor bench ingest-http", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="5 s runs instead of 15 s")
    ap.add_argument("--data-dir", type=Path, help="work folder (default: a temporary one)")
    ap.add_argument("--duration", type=int, help="seconds per load run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument(
        "--form",
        choices=[*FORMS, "both"],
        default="both",
        help="JSON form of the batches (default both; the headline keys are the frame form's)",
    )
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--procs", type=int, default=2, help="Python client processes (no wrk)")
    ap.add_argument("--generator", choices=["wrk", "python"], help="default: wrk if installed")
    ap.add_argument("--serve", choices=["platform", "decode-only"], help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.serve:
        serve(a.serve, a.data_dir, a.port)
        return {}
    a.duration = a.duration or (5 if a.quick else 15)
    a.forms = list(FORMS) if a.form == "both" else [a.form]
    if a.generator is None:
        a.generator = "wrk" if shutil.which("wrk") else "python"
        if a.generator == "python":
            progress(
                "wrk is not installed (apt-get install wrk): falling back to Python client "
                "processes, which top out lower and share the 2 cores with the server"
            )
    t = time.perf_counter()
    if a.data_dir:
        a.data_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="ingest-http-", dir=a.data_dir))
    else:
        work = Path(tempfile.mkdtemp(prefix="shopfloor-bench-ingest-http-"))
    try:
        result = run(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["elapsed_s"] = round(time.perf_counter() - t, 1)
    return emit(result)


if __name__ == "__main__":
    main()
