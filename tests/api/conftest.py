from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings


@dataclass
class Api:
    client: TestClient
    platform: Platform
    tenant_id: int
    headers: dict[str, str]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    settings = Settings(data_dir=tmp_path, max_batch_points=5_000, max_body_bytes=1_000_000)
    platform = Platform(settings)
    info, key = platform.registry.create_tenant("acme")
    with TestClient(create_app(platform=platform)) as client:
        yield Api(client, platform, info.id, {"Authorization": f"Bearer {key}"})
    platform.close()
