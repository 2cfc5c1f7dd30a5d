"""Who is logged in to the console (kept in NiceGUI's per-browser user storage)."""

from __future__ import annotations

from typing import Any

from nicegui import app

from shopfloor.ui.client import ApiClient

__all__ = ["api", "logged_in", "user"]

_APP: dict[str, Any] = {}  # the FastAPI app the console runs on (set by mount.install)


def bind(fastapi_app: Any) -> None:
    _APP["app"] = fastapi_app


def logged_in() -> bool:
    return bool(app.storage.user.get("token"))


def user() -> dict[str, Any]:
    return dict(app.storage.user.get("user") or {})


def api() -> ApiClient:
    """A client of the API as the logged-in user (anonymous before login)."""
    return ApiClient(_APP["app"], app.storage.user.get("token"))
