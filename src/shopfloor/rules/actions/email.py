"""The e-mail action: a plain-text message with the alarm's fields, over SMTP.

``smtplib`` blocks, so one message is sent in a thread (``asyncio.to_thread``). STARTTLS
(verified against the system's CAs) is optional; a login is allowed only with STARTTLS, so
a password never crosses the network in clear.

A message carries the alarm's value out of the platform, so it is an egress like the webhook:
the injected check (``ActionDeps.egress_check``) is asked first, with the destination
``mailto:<recipients>`` and the rule's signals, and a refusal sends nothing.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator

from shopfloor.core.hooks import hookimpl
from shopfloor.rules.actions.base import (
    Action,
    ActionConfig,
    ActionDeps,
    ActionResult,
    EgressCheck,
    EventLike,
    call_check,
    event_row,
    parse_config,
)
from shopfloor.rules.alarm_history import ROW_FIELDS, Row
from shopfloor.rules.alarms import Priority

__all__ = ["EmailAction", "EmailConfig", "render"]


def _address(v: str) -> str:
    if "@" not in v or any(c in v for c in "\r\n<>,; ") or len(v) > 254:
        raise ValueError(f"{v!r} is not a plain e-mail address (name@domain)")
    return v


class EmailConfig(ActionConfig):
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=25, ge=1, le=65535)
    starttls: bool = False
    username: str | None = Field(default=None, min_length=1, max_length=256)
    password: SecretStr | None = None
    sender: str
    to: list[str] = Field(min_length=1, max_length=50)
    subject_prefix: str = Field(default="[shopfloor]", max_length=64)
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        return _address(v)

    @field_validator("to")
    @classmethod
    def _to(cls, v: list[str]) -> list[str]:
        return [_address(a) for a in v]

    @field_validator("subject_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if "\r" in v or "\n" in v:
            raise ValueError("subject_prefix must be one line")
        return v

    @model_validator(mode="after")
    def _login(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.username is not None and not self.starttls:
            raise ValueError("a login needs starttls: true (no password in clear)")
        return self


def _one_line(v: object) -> str:
    return " ".join(str(v).split())


def render(row: Row, prefix: str) -> tuple[str, str]:
    """The subject and plain-text body of one event."""
    raw_priority = row["priority"]
    priority = Priority(raw_priority).name.lower() if isinstance(raw_priority, int) else "?"
    subject = _one_line(
        f"{prefix} {priority} alarm {row['alarm_id']}: {row['to_state']} ({row['cause']})"
    )
    ts = row["ts"]
    lines = []
    if isinstance(ts, int):
        when = datetime.fromtimestamp(ts / 1e9, UTC).isoformat(timespec="milliseconds")
        lines.append(f"time: {when}")
    lines += [f"{name}: {'' if row[name] is None else row[name]}" for name in ROW_FIELDS]
    return subject, "\n".join(lines) + "\n"


class EmailAction(Action):
    kind: ClassVar[str] = "email"
    config_model: ClassVar[type[ActionConfig]] = EmailConfig

    def __init__(self, config: object, check: EgressCheck) -> None:
        self.config = parse_config(EmailConfig, config)
        self.check = check

    @classmethod
    def build(cls, config: object, deps: ActionDeps) -> EmailAction:
        if deps.egress_check is None:
            raise ValueError("the email action needs an egress check (ActionDeps.egress_check)")
        return cls(config, deps.egress_check)

    def _send(self, msg: EmailMessage) -> None:
        cfg = self.config
        with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s) as smtp:
            if cfg.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if cfg.username is not None and cfg.password is not None:
                smtp.login(cfg.username, cfg.password.get_secret_value())
            smtp.send_message(msg)

    async def run(self, event: EventLike, *, signal_ids: Sequence[int] = ()) -> ActionResult:
        cfg = self.config
        if not signal_ids:
            return ActionResult(
                False, self.kind, "no signals given: the egress policy cannot decide", 0
            )
        # The relay is part of the destination: an approval for these recipients through this
        # relay does not cover another relay a rule editor might name.
        destination = f"mailto:{','.join(cfg.to)}?via=smtp://{cfg.host}:{cfg.port}"
        refused = await call_check(self.check, destination, signal_ids)
        if refused is not None:
            return ActionResult(False, self.kind, refused, 0)
        subject, body = render(event_row(event), cfg.subject_prefix)
        # One line per header (RFC 5322 allows 998): the default folding at 78 characters
        # broke long subjects before their first word.
        msg = EmailMessage(policy=SMTP.clone(max_line_length=998))
        msg["From"] = cfg.sender
        msg["To"] = ", ".join(cfg.to)
        msg["Subject"] = subject
        msg.set_content(body)
        try:
            await asyncio.to_thread(self._send, msg)
        except (smtplib.SMTPException, OSError) as exc:
            return ActionResult(False, self.kind, f"{type(exc).__name__}: {exc}")
        return ActionResult(True, self.kind, f"sent to {len(cfg.to)} recipient(s)")


@hookimpl
def shopfloor_alarm_actions() -> dict[str, type[Action]]:
    return {EmailAction.kind: EmailAction}
