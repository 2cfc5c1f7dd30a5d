"""Mount the console on the platform's FastAPI app under ``/ui`` (NiceGUI)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

__all__ = ["MOUNT_PATH", "install"]

MOUNT_PATH = "/ui"


def _secret(data_dir: Path) -> str:
    """The key of the console's browser storage, kept in the data folder (owner-only)."""
    path = data_dir / "ui.secret"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def install(app: Any, data_dir: Path) -> None:
    """Register the pages and mount NiceGUI on ``app`` (once per process: NiceGUI is global)."""
    from fastapi.responses import RedirectResponse
    from nicegui import app as nicegui_app
    from nicegui import ui

    # The browsers' console sessions live in the data folder, not in the working directory.
    nicegui_app.storage.path = (data_dir / "ui-storage").resolve()

    import shopfloor.ui.pages  # noqa: F401 - registers the pages
    from shopfloor.ui import session

    session.bind(app)

    def root() -> RedirectResponse:
        return RedirectResponse(f"{MOUNT_PATH}/")

    app.add_api_route("/", root, include_in_schema=False)

    ui.run_with(
        app,
        mount_path=MOUNT_PATH,
        storage_secret=_secret(data_dir),
        title="Shopfloor",
        favicon="🏭",
    )
