"""What a rule's actions may use on this platform, and where their outcomes go.

:func:`action_deps` gives the rules runtime, per tenant and rule, the dependencies of the
built-in actions (rules/actions):

- ``egress_check``: the tenant's egress policy (security/egress.py), asked as the local actor
  ``rule:<name>`` on the action's channel; webhook and e-mail actions ask it with their
  destination and the rule's signals, and send nothing when it refuses. The decision is
  audited by the policy itself.
- ``publish``: the MQTT endpoint's publisher. The MQTT action refuses the platform's own topic
  trees, and the topic is put under ``alarms/<tenant>/`` so that one tenant's actions never
  publish into another's topics.
- ``command``: a command to a device of the same tenant, sent as the device speaks (Sparkplug
  DCMD confirmed by read-back, or a JSON-API command), like ``POST /devices/{name}/commands``.

:func:`record_action` audits every outcome (``alarm.action``, actor ``rule:<name>``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shopfloor.registry.topics import ALARM_ROOT
from shopfloor.rules.actions import ActionDeps, ActionResult
from shopfloor.rules.rule_actions import RuleAction
from shopfloor.security.egress import EgressPolicy

if TYPE_CHECKING:
    from shopfloor.api.platform import Platform

__all__ = ["ALARM_TOPIC_ROOT", "action_deps", "record_action"]

ALARM_TOPIC_ROOT = ALARM_ROOT  # the devices of the tenant may subscribe there


def action_deps(platform: Platform, tenant_id: int, rule: str) -> ActionDeps:
    tenant = platform.registry.get_tenant(tenant_id)  # a short read: called in a thread
    policy = EgressPolicy(platform.registry, platform.settings, platform.audit)
    actor = f"rule:{rule}"

    async def egress_check(destination: str, signal_ids: Sequence[int]) -> object:
        # Which channel: the destination's scheme says it (mailto: for e-mail, else webhook).
        channel = "email" if destination.startswith("mailto:") else "webhook"
        return await asyncio.to_thread(
            policy.check_local,
            tenant_id,
            actor,
            channel,
            destination,
            None,  # the destination's region is unknown: residency-bound data stays
            signal_ids,
            role="rule",
        )

    async def publish(topic: str, payload: bytes, qos: int) -> None:
        svc = platform.mqtt
        if svc is None or not svc.started.is_set():
            raise RuntimeError("the MQTT endpoint is not running (see mqtt_mode)")
        await svc.publish(f"{ALARM_TOPIC_ROOT}/{tenant.name}/{topic}", payload, qos)

    async def command(device: str, payload: dict[str, Any]) -> Mapping[str, Any]:
        from shopfloor.api.mqtt_routes import deliver_command  # the routes import the platform

        svc = platform.mqtt
        if svc is None or not svc.started.is_set():
            raise RuntimeError("the MQTT endpoint is not running (see mqtt_mode)")
        await asyncio.to_thread(platform.registry.get_device, tenant_id, device)  # NotFound
        details: dict[str, Any] = {"signal": payload.get("signal"), "value": payload.get("value")}
        try:
            answer = await deliver_command(svc, tenant_id, tenant.name, device, payload)
        except Exception as exc:
            details["error"] = f"{type(exc).__name__}: {exc}"
            await _audit_command(platform, tenant_id, rule, device, "failed", details)
            raise
        details.update({k: answer.get(k) for k in ("id", "via", "ok", "read_back", "matches")})
        outcome = "ok" if answer.get("ok") is True else "failed"
        await _audit_command(platform, tenant_id, rule, device, outcome, details)
        return answer

    return ActionDeps(egress_check=egress_check, publish=publish, command=command)


async def _audit_command(
    platform: Platform,
    tenant_id: int,
    rule: str,
    device: str,
    outcome: str,
    details: dict[str, Any],
) -> None:
    """As an operator's command is audited (device.command), with the rule as the actor."""
    await asyncio.to_thread(
        platform.audit.record,
        "device.command",
        f"device:{device}",
        outcome,
        actor=f"rule:{rule}",
        role="rule",
        tenant_id=tenant_id,
        source="rules",
        details=details,
    )


def record_action(
    platform: Platform,
    tenant_id: int,
    rule: str,
    device: str,
    action: RuleAction,
    result: ActionResult,
) -> None:
    details: dict[str, Any] = {
        "kind": action.kind,
        "device": device,
        "reason": result.reason,
        "attempts": result.attempts,
    }
    if result.status is not None:
        details["status"] = result.status
    platform.audit.record(
        "alarm.action",
        f"rule:{rule}",
        "ok" if result.ok else "failed",
        actor=f"rule:{rule}",
        role="rule",
        tenant_id=tenant_id,
        source="rules",
        details=details,
    )
