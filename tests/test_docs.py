"""Documentation cannot fall behind: every route, setting and CLI command is documented."""

from __future__ import annotations

import re
from pathlib import Path

from shopfloor.api.app import create_app
from shopfloor.cli.reference import render
from shopfloor.core.config import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_is_generated_from_the_cli() -> None:
    assert (DOCS / "cli.md").read_text().strip() == render().strip(), (
        "docs/cli.md is stale: run python -m shopfloor.cli.reference > docs/cli.md"
    )


def test_every_setting_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        assert f"`{name}`" in text, f"setting {name} missing from docs/configuration.md"
        assert f"`{field.default}`" in text, f"default of {name} differs in docs/configuration.md"


def test_every_route_is_documented() -> None:
    text = (DOCS / "api.md").read_text()
    # From the OpenAPI paths: app.routes holds included routers as one entry each (FastAPI
    # 0.16x), which would let a whole router go unchecked.
    routes = {re.sub(r"\{(\w+)(:path)?\}", r"{\1}", p) for p in create_app().openapi()["paths"]}
    assert "/api/v1/points" in routes
    documented = set(re.findall(r"(/[\w/{}\-]+)", text))
    documented = {re.sub(r"\{key\}", "{key}", d) for d in documented}
    missing = sorted(
        r.replace("{asset_id}", "{id}")
        for r in routes
        if r.replace("{asset_id}", "{id}") not in documented
    )
    assert not missing, f"routes missing from docs/api.md: {missing}"
