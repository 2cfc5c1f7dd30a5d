"""Fixtures for the security tests: a whole platform app in tmp_path and users of any role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.registry import TenantInfo
from shopfloor.security.roles import Permission, Role

PASSWORD = "correct-horse-battery-9"  # meets the default password policy


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    plat = Platform(Settings(data_dir=tmp_path / "data", mqtt_mode="off"))
    yield plat
    plat.close()


@pytest.fixture
def client(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform=platform)) as c:
        yield c


@dataclass(frozen=True)
class Tenant:
    info: TenantInfo
    key_headers: dict[str, str]  # the tenant's bootstrap key (acts as tenant admin)


@pytest.fixture
def make_tenant(platform: Platform) -> Callable[[str], Tenant]:
    def make(name: str) -> Tenant:
        info, key = platform.registry.create_tenant(name)
        return Tenant(info, {"Authorization": f"Bearer {key}"})

    return make


@pytest.fixture
def acme(make_tenant: Callable[[str], Tenant]) -> Tenant:
    return make_tenant("acme")


@pytest.fixture
def admin_headers(platform: Platform) -> dict[str, str]:
    """The platform admin key from the data folder."""
    return {"Authorization": f"Bearer {platform.admin_key}"}


UserHeaders = Callable[..., dict[str, str]]


@pytest.fixture
def user_headers(platform: Platform) -> UserHeaders:
    """``user_headers(role, tenant_id, asset_id=None, scopes=None)``: a new user holding
    ``role`` and the headers of an API token of theirs."""
    count = 0

    def make(
        role: Role,
        tenant_id: int | None,
        asset_id: int | None = None,
        scopes: set[Permission] | None = None,
    ) -> dict[str, str]:
        nonlocal count
        count += 1
        user = platform.auth.create_user(
            tenant_id, f"{role.value}-{count}", PASSWORD, [(role, asset_id)]
        )
        _, token = platform.auth.issue_token(user.id, "tests", scopes)
        return {"Authorization": f"Bearer {token}"}

    return make
