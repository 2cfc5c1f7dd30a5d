"""The webhook action: POST the event as JSON, signed, with retries; an egress path.

Every delivery carries::

    Content-Type: application/json
    X-Shopfloor-Timestamp: <unix seconds of this attempt>
    X-Shopfloor-Signature: sha256=<hex HMAC-SHA256 of b"<timestamp>." + body under the secret>
    X-Shopfloor-Delivery: <random id, the same on every retry of one delivery>

The timestamp is inside the MAC, so a captured request cannot be replayed with a fresh one;
a receiver recomputes the MAC, compares in constant time, refuses timestamps more than a few
minutes off (:func:`verify_signature`, 300 s by default) and drops delivery ids it has seen.

Before anything is sent the injected egress check (``ActionDeps.egress_check``) is asked
with the URL and the event's signals; a refusal is ``ok=False`` and nothing is sent.
Redirects are not followed (a redirect would send the data where the policy did not look).

Retries: connection errors and timeouts, 5xx and 429 are retried ``retries`` times with
exponential backoff (``backoff_s`` * 2^n, at most ``max_delay_s``) and jitter (a delay is
drawn between half and all of that); a ``Retry-After`` header (seconds or an HTTP date) is
waited at least, and one asking for more than ``max_delay_s`` ends the delivery. Any other
status (4xx, 3xx) fails at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Callable, Sequence
from email.utils import parsedate_to_datetime
from typing import ClassVar, Final
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import Field, SecretStr, field_validator

from shopfloor.core.hooks import hookimpl
from shopfloor.rules.actions.base import (
    Action,
    ActionConfig,
    ActionDeps,
    ActionResult,
    EgressCheck,
    EventLike,
    Sleep,
    call_check,
    event_payload,
    event_row,
    parse_config,
)

__all__ = ["WebhookAction", "WebhookConfig", "sign", "verify_signature"]

SIGNATURE_HEADER: Final = "X-Shopfloor-Signature"
TIMESTAMP_HEADER: Final = "X-Shopfloor-Timestamp"
DELIVERY_HEADER: Final = "X-Shopfloor-Delivery"
TOLERANCE_S: Final = 300


class WebhookConfig(ActionConfig):
    url: str = Field(min_length=1, max_length=2000)
    secret: SecretStr = Field(min_length=16, max_length=512)
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_s: float = Field(default=0.5, ge=0, le=60)
    max_delay_s: float = Field(default=60.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("url must not carry credentials (the secret signs instead)")
        return v


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Shopfloor-Signature`` value for one body at one timestamp."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    now: float | None = None,
    tolerance_s: float = TOLERANCE_S,
) -> bool:
    """What a receiver checks: the MAC matches and the timestamp is recent."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def _retry_after(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class WebhookAction(Action):
    kind: ClassVar[str] = "webhook"
    config_model: ClassVar[type[ActionConfig]] = WebhookConfig

    def __init__(
        self,
        config: object,
        check: EgressCheck,
        *,
        sleep: Sleep | None = None,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = parse_config(WebhookConfig, config)
        self.check = check
        self.sleep: Sleep = sleep or asyncio.sleep
        self.jitter = jitter
        self.clock = clock
        self.transport = transport

    @classmethod
    def build(cls, config: object, deps: ActionDeps) -> WebhookAction:
        if deps.egress_check is None:
            raise ValueError("the webhook action needs an egress check (ActionDeps.egress_check)")
        return cls(config, deps.egress_check, sleep=deps.sleep)

    def _backoff(self, attempt: int) -> float:
        cfg = self.config
        full = min(cfg.max_delay_s, cfg.backoff_s * 2.0 ** (attempt - 1))
        return full / 2 + self.jitter() * full / 2

    async def run(self, event: EventLike, *, signal_ids: Sequence[int] = ()) -> ActionResult:
        cfg = self.config
        body = orjson.dumps(event_payload(event_row(event)))
        if not signal_ids:
            return ActionResult(
                False, self.kind, "no signals given: the egress policy cannot decide", 0
            )
        refused = await call_check(self.check, cfg.url, signal_ids)
        if refused is not None:
            return ActionResult(False, self.kind, refused, 0)
        secret = cfg.secret.get_secret_value()
        delivery = secrets.token_hex(16)
        attempt = 0
        async with httpx.AsyncClient(
            timeout=cfg.timeout_s, follow_redirects=False, transport=self.transport
        ) as client:
            while True:
                attempt += 1
                ts = str(int(self.clock()))
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "shopfloor-webhook",
                    TIMESTAMP_HEADER: ts,
                    SIGNATURE_HEADER: sign(secret, ts, body),
                    DELIVERY_HEADER: delivery,
                }
                status: int | None = None
                wait: float | None = None
                try:
                    r = await client.post(cfg.url, content=body, headers=headers)
                except httpx.TransportError as exc:
                    reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    retryable = True
                else:
                    status = r.status_code
                    if 200 <= status < 300:
                        return ActionResult(True, self.kind, f"HTTP {status}", attempt, status)
                    reason = f"HTTP {status}"
                    retryable = status >= 500 or status == 429
                    wait = _retry_after(r.headers.get("retry-after"), self.clock())
                if not retryable or attempt > cfg.retries:
                    return ActionResult(False, self.kind, reason, attempt, status)
                delay = self._backoff(attempt)
                if wait is not None:
                    if wait > cfg.max_delay_s:
                        return ActionResult(
                            False,
                            self.kind,
                            f"{reason}: Retry-After {wait:g} s is beyond max_delay_s "
                            f"{cfg.max_delay_s:g}",
                            attempt,
                            status,
                        )
                    delay = max(delay, wait)
                await self.sleep(delay)


@hookimpl
def shopfloor_alarm_actions() -> dict[str, type[Action]]:
    return {WebhookAction.kind: WebhookAction}
