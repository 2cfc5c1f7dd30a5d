"""The app host: runs every enabled app of every tenant beside the ingest path.

Like the rules runtime, the host takes every durable batch from the ingest path
(:meth:`AppHost.feed` only enqueues: bounded, never blocks, a full queue drops and counts).
One worker task then, for each running app instance whose subscribed signals are in the
batch, hands it those points (:meth:`App.on_points`) in a worker thread, and calls
:meth:`App.on_tick` every ``manifest.tick_s``. Instances are called one at a time, so an app
needs no locks of its own.

- An app that raises is stopped with the reason shown in the catalogue (``failed``); the
  others keep running. Enabling it again (or changing its config) starts it afresh.
- State: :meth:`App.state` is saved as JSON under ``<data_dir>/apps/<tenant id>/<app>/``
  every ``SAVE_EVERY_S`` and when the host stops, and given to :meth:`App.restore` when the
  instance starts again.
- The catalogue's changes (enable, disable, config) are picked up within a second; the
  subscriptions are asked again every ``RESUBSCRIBE_S`` (new devices).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.apps.catalogue import Catalogue, parse_app_config
from shopfloor.apps.context import PlatformContext
from shopfloor.apps.sdk import App, AppConfig, AppManifest, PointBatch
from shopfloor.core.quality import BAD

__all__ = ["AppHost", "Instance"]

log = logging.getLogger(__name__)

QUEUE_BATCHES: Final = 1024
SAVE_EVERY_S: Final = 60.0
RESUBSCRIBE_S: Final = 30.0
STATE_FILE: Final = "state.json"
STOP_WAIT_S: Final = 5.0  # at shutdown, how long to wait for an app's running call

ContextFactory = Callable[[int, str], PlatformContext]


@dataclass(eq=False)
class Instance:
    """One app running for one tenant."""

    tenant_id: int
    name: str
    app: App[Any]
    ctx: PlatformContext
    config_text: str
    subscribed: npt.NDArray[np.int32] = field(default_factory=lambda: np.empty(0, np.int32))
    subscribed_at: float = 0.0
    last_tick: float = 0.0
    failed: str | None = None
    points: int = 0
    batches: int = 0
    ticks: int = 0
    started_at: int = field(default_factory=time.time_ns)
    # Held while the app is called: by the host's worker and by the app's API routes, so an
    # app is never called from two threads at once.
    lock: threading.Lock = field(default_factory=threading.Lock)
    app_status: dict[str, Any] = field(default_factory=dict)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "running": self.failed is None,
            "failed": self.failed,
            "subscribed_signals": len(self.subscribed),
            "points": self.points,
            "batches": self.batches,
            "ticks": self.ticks,
            "points_written": self.ctx.points_written,
        }
        if self.failed is None:
            # The app's own figures as of its last call: asking it now would wait for a long
            # tick (a model being trained) to end.
            out["app"] = self.app_status
        return out

    def refresh_status(self) -> None:
        """Take the app's figures (the caller holds the lock)."""
        try:
            self.app_status = self.app.status()
        except Exception as exc:
            self.app_status = {"error": f"{type(exc).__name__}: {exc}"}


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)  # a crash mid-write leaves the previous state, never half of one


class AppHost:
    """Runs the enabled apps; see the module docstring."""

    def __init__(
        self,
        catalogue: Catalogue,
        make_context: ContextFactory,
        state_dir: Path,
        *,
        queue_size: int = QUEUE_BATCHES,
    ) -> None:
        self.catalogue = catalogue
        self.make_context = make_context
        self.state_dir = state_dir
        self._size = queue_size
        self._queue: asyncio.Queue[tuple[int, pa.Table]] = asyncio.Queue(queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.instances: dict[tuple[int, str], Instance] = {}
        self._generation: object = None
        # Set when the host stops: a worker thread still delivering or ticking returns after
        # the app it is in (the process exits only once its threads have).
        self._stopping = False
        self.dropped = 0

    # -- input -----------------------------------------------------------------------------

    def feed(self, tenant_id: int, batch: pa.Table) -> None:
        """Hand over a durable batch; never blocks, never raises."""
        loop = self._loop
        if loop is None or batch.num_rows == 0:
            return
        if not any(k[0] == tenant_id for k in self.instances):
            return  # no app of this tenant runs: nothing to queue
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._put(tenant_id, batch)
        else:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._put, tenant_id, batch)

    def _put(self, tenant_id: int, batch: pa.Table) -> None:
        try:
            self._queue.put_nowait((tenant_id, batch))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("apps are behind ingest: batches are dropped and counted")

    # -- instances -------------------------------------------------------------------------

    def state_path(self, tenant_id: int, name: str) -> Path:
        return self.state_dir / str(tenant_id) / name / STATE_FILE

    def instance(self, tenant_id: int, name: str) -> Instance | None:
        return self.instances.get((tenant_id, name))

    def sync(self) -> None:
        """Start, stop and restart instances to match the catalogue (blocking: a thread).

        An instance is restarted when its catalogue entry changed (a new config, or enabled
        again: that is how a failed app is given another try)."""
        self._generation = self.catalogue.fingerprint()
        wanted = {(t, info.app): info for t, info in self.catalogue.enabled()}
        for key, inst in list(self.instances.items()):
            info = wanted.get(key)
            if info is None or _version(info.config, info.updated_at) != inst.config_text:
                self._stop(inst)
        for key, info in wanted.items():
            if key not in self.instances:
                self._start(key[0], key[1], info.config, _version(info.config, info.updated_at))

    def _start(self, tenant_id: int, name: str, config: dict[str, Any], text: str) -> None:
        cls = self.catalogue.apps[name]
        ctx = self.make_context(tenant_id, name)
        try:
            app = cls(ctx, parse_app_config(cls, config))
        except Exception as exc:
            log.exception("tenant %d: app %r did not start", tenant_id, name)
            failed = _Failed(ctx, AppConfig())
            inst = Instance(tenant_id, name, failed, ctx, text, failed=_why(exc, "start"))
            self.instances[(tenant_id, name)] = inst
            return
        inst = Instance(tenant_id, name, app, ctx, text)
        path = self.state_path(tenant_id, name)
        if path.exists():
            try:
                app.restore(json.loads(path.read_text()))
            except Exception as exc:
                log.exception("tenant %d: app %r could not restore its state", tenant_id, name)
                inst.failed = _why(exc, "restore")
        self.instances[(tenant_id, name)] = inst
        if inst.failed is None:
            try:
                with inst.lock:
                    inst.refresh_status()
                self._subscribe(inst)
            except Exception as exc:  # the app's bug stops this app, never the host
                self._fail(inst, exc, "subscriptions")
                return
        log.info("tenant %d: app %r started", tenant_id, name)

    def _stop(self, inst: Instance, wait_s: float = -1) -> None:
        """Save and close an instance; ``wait_s`` >= 0 bounds the wait for a running call
        (at shutdown: a long tick must not hold the platform up; the last saved state stays)."""
        self.instances.pop((inst.tenant_id, inst.name), None)
        if not inst.lock.acquire(timeout=wait_s):
            log.warning(
                "tenant %d: app %r is busy: not saved now (its last saved state stays)",
                inst.tenant_id,
                inst.name,
            )
            return
        try:
            if inst.failed is None:
                self._save_locked(inst)
            inst.app.close()  # not while one of its routes runs: the lock is held
        except Exception:
            log.exception("tenant %d: app %r: close() failed", inst.tenant_id, inst.name)
        finally:
            inst.lock.release()

    def _save(self, inst: Instance) -> None:
        with inst.lock:
            self._save_locked(inst)

    def _save_locked(self, inst: Instance) -> None:
        try:
            state = inst.app.state()
            _save(self.state_path(inst.tenant_id, inst.name), state)
        except Exception:
            log.exception("tenant %d: app %r: state not saved", inst.tenant_id, inst.name)

    def _subscribe(self, inst: Instance) -> None:
        ids = np.unique(np.asarray(list(inst.app.subscriptions()), dtype=np.int32))
        inst.subscribed = ids
        inst.subscribed_at = time.monotonic()

    def _fail(self, inst: Instance, exc: BaseException, where: str) -> None:
        inst.failed = _why(exc, where)
        log.error(
            "tenant %d: app %r stopped: %s", inst.tenant_id, inst.name, inst.failed, exc_info=exc
        )
        self._save(inst)

    # -- the worker ------------------------------------------------------------------------

    def deliver(self, tenant_id: int, batch: pa.Table) -> None:
        """Hand ``batch`` to every running instance of the tenant that subscribed to any of
        its signals (blocking: a thread)."""
        sid = batch.column("signal_id").to_numpy()
        # Bad-quality points (a failed poll) carry no reading: apps never see them, as the
        # rules never do. Uncertain ones pass.
        good = (batch.column("quality").to_numpy() & np.uint32(BAD)) == 0
        for inst in [i for i in list(self.instances.values()) if i.tenant_id == tenant_id]:
            if self._stopping:
                return
            if inst.failed is not None or len(inst.subscribed) == 0:
                continue
            mask = np.isin(sid, inst.subscribed) & good
            if not mask.any():
                continue
            rows = np.flatnonzero(mask)
            part = PointBatch(
                sid[rows].astype(np.int32, copy=False),
                batch.column("ts").to_numpy()[rows].astype(np.int64, copy=False),
                batch.column("value").to_numpy(zero_copy_only=False)[rows].astype(np.float64),
            )
            try:
                with inst.lock:
                    inst.app.on_points(part)
                    inst.refresh_status()
            except Exception as exc:
                self._fail(inst, exc, "on_points")
                continue
            inst.points += len(part)
            inst.batches += 1

    def tick(self, now_mono: float | None = None) -> None:
        """Run due ticks, refresh subscriptions, save states (blocking: a thread)."""
        mono = time.monotonic() if now_mono is None else now_mono
        for inst in list(self.instances.values()):
            if self._stopping:
                return
            if inst.failed is not None:
                continue
            if mono - inst.last_tick >= inst.app.manifest.tick_s:
                inst.last_tick = mono
                try:
                    with inst.lock:
                        inst.app.on_tick(time.time_ns())
                        inst.refresh_status()
                except Exception as exc:
                    self._fail(inst, exc, "on_tick")
                    continue
                inst.ticks += 1
            if mono - inst.subscribed_at >= RESUBSCRIBE_S:
                try:
                    self._subscribe(inst)
                except Exception as exc:
                    self._fail(inst, exc, "subscriptions")

    def save_all(self) -> None:
        for inst in list(self.instances.values()):
            if inst.failed is None:
                self._save(inst)

    def stop_all(self, wait_s: float = STOP_WAIT_S) -> None:
        for inst in list(self.instances.values()):
            self._stop(inst, wait_s)

    async def run(self) -> None:
        """The worker, for the life of the platform (cancel to stop; states are saved)."""
        self._queue = asyncio.Queue(self._size)
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        last_save = time.monotonic()
        try:
            await asyncio.to_thread(self.sync)
            while True:
                try:
                    await self._round()
                except Exception:  # never let one round's failure stop every tenant's apps
                    log.exception("app host: a round failed; going on")
                if time.monotonic() - last_save >= SAVE_EVERY_S:
                    last_save = time.monotonic()
                    await asyncio.to_thread(self.save_all)
        finally:
            self._loop = None
            self._stopping = True
            await asyncio.shield(asyncio.to_thread(self.stop_all))

    async def _round(self) -> None:
        """One round: take what is queued (waiting up to a second), pick up catalogue
        changes, deliver, tick."""
        try:
            first = await asyncio.wait_for(self._queue.get(), 1.0)
            todo = [first]
            while not self._queue.empty():
                todo.append(self._queue.get_nowait())
        except TimeoutError:
            todo = []
        # The catalogue lives in the registry: a change from this process or from the CLI
        # (another process) shows in its fingerprint (rows and the newest change).
        if await asyncio.to_thread(self.catalogue.fingerprint) != self._generation:
            await asyncio.to_thread(self.sync)
        for tenant_id, batch in todo:
            await asyncio.to_thread(self.deliver, tenant_id, batch)
        await asyncio.to_thread(self.tick)


def _version(config: dict[str, Any], updated_at: object) -> str:
    return json.dumps([config, str(updated_at)], sort_keys=True)


def _why(exc: BaseException, where: str) -> str:
    return f"{where} raised {type(exc).__name__}: {exc}"


class _Failed(App[Any]):
    """Stands in for an app whose constructor raised (so its status can be shown)."""

    manifest = AppManifest(name="failed", title="failed", version="0.0.0", summary="no start")

    def subscriptions(self) -> list[int]:
        return []
