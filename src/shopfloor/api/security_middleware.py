"""HTTP middleware of the security layer (placeholders, filled in by issue 4/8).

``install_audit`` records every state-changing call; ``install_transport`` adds HSTS and
secure-cookie handling on HTTPS; ``install_limits`` applies per-tenant rate limits.
"""

from __future__ import annotations

from fastapi import FastAPI


def install_audit(app: FastAPI) -> None:
    """Record every state-changing API call in the audit log (security/audit.py)."""


def install_transport(app: FastAPI) -> None:
    """HSTS and secure cookies when serving HTTPS."""


def install_limits(app: FastAPI) -> None:
    """Per-tenant API rate limits with 429 answers (security/limits.py)."""
