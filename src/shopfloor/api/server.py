"""Running the app: one uvicorn process, tuned for ingest; what it serves follows its role."""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from typing import TextIO

import uvicorn

from shopfloor.api.app import HEALTH_ONLY_ROLES, StartHook, create_app, create_worker_app
from shopfloor.api.platform import check_role
from shopfloor.core.config import Settings
from shopfloor.security.tls import ServerCert, server_certificate

# Ingest allocates many short-lived containers per request; the default gen-0 threshold (700)
# made the collector run every few requests and cost ~15% of throughput (measured with the
# ingest-http benchmark). Long-lived start-up objects are frozen out of the collector's scans.
GC_THRESHOLDS = (50_000, 20, 100)


def run_server(settings: Settings, on_start: Sequence[StartHook] = ()) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    check_role(settings)  # a role the storage cannot serve stops the start, with the setting
    tls = tls_options(settings)  # before the app: a bad certificate stops the start
    if settings.role in HEALTH_ONLY_ROLES:
        application = create_worker_app(settings, on_start)
    else:
        application = create_app(settings, on_start=on_start)
    if settings.ui and settings.role in ("all", "api"):
        from shopfloor.ui.mount import install  # NiceGUI is global: one console per process

        install(application, settings.data_dir)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    uvicorn.run(
        application,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        access_log=False,
        ssl_certfile=tls.cert_file if tls else None,
        ssl_keyfile=tls.key_file if tls else None,
    )


def tls_options(settings: Settings, out: TextIO | None = None) -> ServerCert | None:
    """The certificate to serve when ``settings.https`` (else None), after printing its
    SHA-256 fingerprint so clients can pin or check it."""
    if not settings.https:
        return None
    cert = server_certificate(settings)
    if cert.generated:
        how = "self-signed, made now"
    elif cert.self_signed:
        how = "self-signed, reused"
    else:
        how = "provided"
    print(
        f"HTTPS certificate {cert.cert_file} ({how}, valid until {cert.not_after:%Y-%m-%d})\n"
        f"  SHA-256 fingerprint {cert.fingerprint}",
        file=out or sys.stderr,
        flush=True,
    )
    return cert
