"""Running the app: one uvicorn process, tuned for ingest."""

from __future__ import annotations

import gc
from collections.abc import Sequence

import uvicorn

from shopfloor.api.app import StartHook, create_app
from shopfloor.core.config import Settings

# Ingest allocates many short-lived containers per request; the default gen-0 threshold (700)
# made the collector run every few requests and cost ~15% of throughput (measured with the
# ingest-http benchmark). Long-lived start-up objects are frozen out of the collector's scans.
GC_THRESHOLDS = (50_000, 20, 100)


def run_server(settings: Settings, on_start: Sequence[StartHook] = ()) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    application = create_app(settings, on_start=on_start)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    uvicorn.run(
        application,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
    )
