"""A schemathesis run over the whole OpenAPI, in process, with valid credentials.

A fresh platform (tmp folder, MQTT off) with a tenant holding some objects; every operation gets
a bounded number of generated requests (``MAX_EXAMPLES``), sent as that tenant's admin, and
each answer must be no server error, a documented status with the documented content type,
and match its schema. Routes that need MQTT answer 503 here, which their responses document.

Runs in ``make test``; ``MAX_EXAMPLES`` keeps the file well under two minutes on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from shopfloor.api.app import create_app
from shopfloor.api.platform import Platform
from shopfloor.core.config import Settings
from shopfloor.registry.service import SignalSpec
from shopfloor.security.roles import Role
from tests.security.conftest import PASSWORD

MAX_EXAMPLES = 12

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

# Operations left out of the negative run, each with the reason; empty: every operation runs.
EXCLUDED: list[tuple[str, str, str]] = []  # (method, path, why): none at present

# Operations that reach a device over MQTT: without an MQTT endpoint they answer 503.
NEEDS_MQTT = {
    ("POST", "/api/v1/devices/{name}/commands"),
    ("PUT", "/api/v1/devices/{name}/attributes/desired"),
}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    data: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    plat = Platform(Settings(data_dir=data, mqtt_mode="off"))
    yield plat
    plat.close()


@pytest.fixture(scope="module")
def headers(platform: Platform) -> dict[str, str]:
    """A tenant admin's API token in a tenant with an asset, a typed device and a signal."""
    reg = platform.registry
    tenant, _ = reg.create_tenant("acme")
    ent = reg.create_asset(tenant.id, "enterprise", "works")
    reg.create_device_type(tenant.id, "press", [SignalSpec("temp")])
    reg.create_device(tenant.id, "press-01", "press", ent.id)
    platform.credentials.issue_token(tenant.id, "press-01")
    user = platform.auth.create_user(tenant.id, "admin-1", PASSWORD, [Role.TENANT_ADMIN])
    _, token = platform.auth.issue_token(user.id, "schemathesis")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def api_schema(platform: Platform) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(platform=platform))
    schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)
    return schema


def _operations() -> list[Any]:
    """(mode, method, path) of every operation, read from the app's OpenAPI when collected."""
    paths = create_app().openapi()["paths"]  # no platform needed: nothing is served
    skip = {(m.upper(), p): why for m, p, why in EXCLUDED}
    out = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for path, ops in paths.items():
            for method in ops:
                key = (method.upper(), path)
                why = skip.get(key) if mode is GenerationMode.NEGATIVE else None
                marks = [pytest.mark.skip(reason=why)] if why else []
                out.append(
                    pytest.param(mode, *key, id=f"{mode.value}-{key[0]} {path}", marks=marks)
                )
    return out


@pytest.mark.parametrize(("mode", "method", "path"), _operations())
def test_the_api_keeps_its_contract(
    api_schema: Any, headers: dict[str, str], method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        if response.status_code == 503 and (method.upper(), path) in NEEDS_MQTT:
            # The run has no MQTT endpoint (mqtt_mode off), so these answer their documented
            # 503 MqttUnavailable; every other check still applies.
            assert response.json()["error"]["type"] == "MqttUnavailable"
            case.validate_response(response, checks=CHECKS[1:])
            return
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # Negative mode on an operation without inputs to break: nothing to send.
        if mode is GenerationMode.POSITIVE:
            raise


def test_success_responses_document_their_model() -> None:
    """A 2xx JSON answer is documented with its model, not as a bare string: FastAPI does so
    only when the response class is a JSONResponse (api/responses.JSON must subclass it)."""
    paths = create_app().openapi()["paths"]
    bare = [
        f"{method.upper()} {path} {code}"
        for path, ops in paths.items()
        for method, op in ops.items()
        for code, answer in op["responses"].items()
        if code.startswith("2")
        and answer.get("content", {}).get("application/json", {}).get("schema")
        == {"type": "string"}
    ]
    assert not bare, f"documented as a bare JSON string: {bare[:5]} ... ({len(bare)})"
