"""Fixtures for the registry tests: a migrated SQLite registry in tmp_path and an API client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shopfloor.api import errors
from shopfloor.api.registry_routes import router
from shopfloor.core.config import Settings
from shopfloor.registry import Registry, TenantInfo
from shopfloor.security.audit import AuditLog
from shopfloor.security.auth import AuthService

ADMIN_KEY = "admin-key-for-tests"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    reg.upgrade()
    yield reg
    reg.close()


@pytest.fixture
def tenant(registry: Registry) -> TenantInfo:
    return registry.create_tenant("acme")[0]


@dataclass
class _Platform:
    """The attributes of the real Platform that the registry routes use."""

    registry: Registry
    admin_key: str
    auth: AuthService


@pytest.fixture
def app(registry: Registry, tmp_path: Path) -> FastAPI:
    """Just the registry router, with the platform's error handlers."""
    app = FastAPI()
    app.include_router(router)
    errors.install(app)
    settings = Settings(data_dir=tmp_path)
    auth = AuthService(registry, settings, AuditLog(registry, settings))
    app.state.platform = _Platform(registry, ADMIN_KEY, auth)
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c
