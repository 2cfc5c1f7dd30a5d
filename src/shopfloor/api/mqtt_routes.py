"""Commands to devices and desired attributes over the MQTT device endpoint, and its figures.

A command is published on ``sf/v1/{tenant}/{device}/commands/{id}`` and the call waits (up to
``mqtt_command_timeout_s`` or the body's ``timeout_s``) for the device's answer on
``.../commands/{id}/response``. A signal write to a device the Sparkplug B host knows (a
device of an edge node that sent its DBIRTH) goes as a DCMD instead, and the answer is the
DDATA with the value the device read back after the write (docs/sparkplug-host.md, Commands).
Desired attributes are stored in the registry and published
retained on ``.../attributes/desired``, so a device gets them whenever it subscribes.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from shopfloor.api import scoping
from shopfloor.api.deps import get_platform, source_of
from shopfloor.api.platform import Platform
from shopfloor.api.registry_routes import AUTH, E400, E404, E409, E422, ErrorBody, Responses
from shopfloor.api.scoping import device_scope, scope_of
from shopfloor.core.errors import BadInput, ShopfloorError
from shopfloor.ingest.mqtt.service import MqttService
from shopfloor.ingest.sparkplug.host import SparkplugHost
from shopfloor.security.principal import Scope
from shopfloor.security.roles import Permission

router = APIRouter(prefix="/api/v1", tags=["mqtt"])

E503: Responses = {503: {"model": ErrorBody, "description": "The MQTT endpoint is not running"}}
E504: Responses = {504: {"model": ErrorBody, "description": "The device did not answer in time"}}


class MqttUnavailable(ShopfloorError):
    status_code = 503


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: str | None = Field(None, description="Signal to write (with value).")
    value: Any = Field(None, description="Value to write to the signal.")
    method: str | None = Field(None, description="Method to call (with params).")
    params: dict[str, Any] | None = Field(None, description="Arguments of the method.")
    timeout_s: float | None = Field(None, gt=0, le=300, description="How long to wait.")


class CommandOut(BaseModel):
    id: str
    ok: bool | None = None
    value: Any = None
    message: str | None = None
    via: str = Field("json", description="'json' (JSON-API command) or 'sparkplug' (DCMD).")
    read_back: Any = Field(None, description="Sparkplug: the value read back after the write.")
    matches: bool | None = Field(
        None, description="Sparkplug: whether the value read back equals the value sent."
    )


def _service(platform: Platform) -> MqttService:
    svc = platform.mqtt
    if svc is None or not svc.started.is_set():
        raise MqttUnavailable("the MQTT device endpoint is not running (see mqtt_mode)")
    return svc


@router.post(
    "/devices/{name}/commands",
    summary="Send a command to a device and wait for its response",
    response_model=CommandOut,
    responses={**E400, **AUTH, **E404, **E409, **E422, **E503, **E504},
)
async def send_command(
    request: Request,
    name: str,
    body: CommandIn,
    platform: Annotated[Platform, Depends(get_platform)],
    scope: Annotated[Scope, Depends(device_scope(Permission.COMMANDS_SEND))],
) -> dict[str, Any]:
    device = name
    # 404 for an unknown device before 503: the answer for another tenant's device is the same
    # whether or not the MQTT endpoint runs.
    await asyncio.to_thread(platform.registry.get_device, scope.tenant_id, device)
    svc = _service(platform)
    if (body.signal is None) == (body.method is None):
        raise BadInput("send either 'signal' (with 'value') or 'method' (with 'params')", "body")
    if body.signal is not None and body.params is not None:
        raise BadInput("a signal write takes 'value', not 'params'", "params")
    payload = body.model_dump(exclude_none=True, exclude={"timeout_s"})
    try:
        answer = await deliver_command(
            svc, scope.tenant_id, scope.tenant.name, device, payload, body.timeout_s
        )
    except Exception as exc:
        await _audit_command(platform, scope, request, device, payload, None, exc)
        raise
    await _audit_command(platform, scope, request, device, payload, answer, None)
    return answer


async def _audit_command(
    platform: Platform,
    scope: Scope,
    request: Request,
    device: str,
    payload: dict[str, Any],
    answer: dict[str, Any] | None,
    error: Exception | None,
) -> None:
    """What was commanded and what the device answered. The HTTP call is audited anyway, but a
    write the device refused is a 200 there: here it is "failed", with the answer."""
    details: dict[str, Any] = {
        k: payload[k] for k in ("signal", "value", "method", "params") if k in payload
    }
    if answer is not None:
        details.update(
            {k: answer.get(k) for k in ("id", "via", "ok", "read_back", "matches", "message")}
        )
        outcome = "ok" if answer.get("ok") is True else "failed"  # the device refused
    else:
        details["error"] = f"{type(error).__name__}: {error}"
        outcome = "failed"
    await asyncio.to_thread(
        platform.audit.record,
        "device.command",
        f"device:{device}",
        outcome,
        principal=scope.principal,
        tenant_id=scope.tenant_id,
        source=source_of(request),
        details=details,
    )


async def deliver_command(
    svc: MqttService,
    tenant_id: int,
    tenant: str,
    device: str,
    payload: dict[str, Any],
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Send a command the way the device speaks: a signal write to a device the Sparkplug B
    host knows goes as a DCMD confirmed by read-back; anything else as a JSON-API command.
    Also the command alarm action's sender (api/alarm_actions.py)."""
    host = svc.sparkplug
    signal = payload.get("signal")
    if signal is not None and isinstance(host, SparkplugHost) and host.knows(tenant_id, device):
        wait = timeout_s or svc.settings.mqtt_command_timeout_s
        result = await host.write(tenant_id, device, str(signal), payload.get("value"), wait)
        return {
            "id": secrets.token_hex(8),
            "ok": result.ok,
            "value": result.read_back,
            "message": result.message,
            "via": "sparkplug",
            "read_back": result.read_back,
            "matches": result.matches,
        }
    response = await svc.command(tenant, device, payload, timeout_s)
    return {
        "id": response["id"],
        "ok": response.get("ok") if isinstance(response.get("ok"), bool) else None,
        "value": response.get("value"),
        "message": response.get("message") if isinstance(response.get("message"), str) else None,
        "via": "json",
    }


@router.put(
    "/devices/{name}/attributes/desired",
    summary="Set a device's desired attributes (published retained to the device)",
    responses={**E400, **AUTH, **E404, **E422, **E503},
)
async def put_desired(
    name: str,
    attrs: dict[str, Any],
    platform: Annotated[Platform, Depends(get_platform)],
    scope: Annotated[Scope, Depends(device_scope(Permission.REGISTRY_WRITE))],
) -> dict[str, Any]:
    device = name
    await asyncio.to_thread(platform.registry.get_device, scope.tenant_id, device)  # 404 first
    svc = _service(platform)
    await asyncio.to_thread(
        platform.credentials.set_desired_attributes, scope.tenant_id, device, attrs
    )
    await svc.publish_desired(scope.tenant.name, device, attrs)
    return attrs


@router.get(
    "/mqtt/stats",
    summary="MQTT endpoint figures and rejected messages per device",
    responses=AUTH,
)
async def mqtt_stats(
    platform: Annotated[Platform, Depends(get_platform)],
    scope: Annotated[Scope, Depends(scope_of(Permission.REGISTRY_READ))],
) -> dict[str, object]:
    if platform.mqtt is None:
        return {"mode": "off", "running": False}
    # A tenant sees its own devices' figures only, a subtree binding those below it.
    stats = platform.mqtt.stats(scope.tenant.name)
    own = stats.get("rejected", [])
    assert isinstance(own, list)
    shown = set(scoping.visible_device_names(scope, platform.registry, {r["device"] for r in own}))
    if len(shown) < len({r["device"] for r in own}):
        visible = [r for r in own if r["device"] in shown]
        stats["rejected"] = visible
        stats["rejected_messages"] = sum(r["count"] for r in visible)
    return stats
