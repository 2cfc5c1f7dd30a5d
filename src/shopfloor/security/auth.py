"""Users, login, sessions, TOTP, API tokens and access grants over the registry's database.

``resolve`` turns a session or API token secret into a :class:`Principal`; ``enter_tenant``
lets a platform user into a tenant that granted access. The design is docs/security.md.

Secrets are never stored: sessions and tokens as sha256 (random 256-bit values need no slow
hash), passwords as argon2id (security/passwords.py). A secret's prefix says what it is, so
``resolve`` answers None for anything else without touching the database.

``resolve`` runs on every API request and ingest call, so it keeps what it found in memory:
an entry lives ``CACHE_TTL_S`` at most, and every change made through this service that can
end or alter a credential (revoke, logout, disable, lock, role or password change, delete)
drops the whole cache at once. Writes that cannot (a failed-login counter, a new session or
token) keep it, so a flood of bad logins does not turn every request into a database read. A
change made by another process (the CLI, a second server) is seen here within ``CACHE_TTL_S``.

Users who hold a role outside ``DELEGATED_ROLES`` (security admins, auditors) are managed by
the platform operator only: an actor acting inside a tenant (a tenant admin on the API) gets
Forbidden for any change to them, and for granting such a role.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar, cast

from argon2 import PasswordHasher
from sqlalchemy import CursorResult, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shopfloor.core.config import Settings
from shopfloor.core.errors import (
    BadInput,
    Conflict,
    Forbidden,
    NotFound,
    ShopfloorError,
    Unauthorized,
)
from shopfloor.registry.models import (
    AccessGrant,
    ApiToken,
    Asset,
    RoleBinding,
    Tenant,
    User,
    UserSession,
)
from shopfloor.registry.service import Registry, TenantInfo, check_name
from shopfloor.security import passwords, totp
from shopfloor.security.audit import AuditLog
from shopfloor.security.limits import RateLimited, TokenBucket
from shopfloor.security.principal import Binding, Principal, PrincipalKind
from shopfloor.security.roles import (
    DELEGATED_ROLES,
    GRANTED_ROLE,
    MFA_ROLES,
    PLATFORM_ROLES,
    TENANT_ROLES,
    Permission,
    Role,
    check_role_set,
    permission,
    permissions_of,
    role,
)

TOKEN_PREFIX: Final = "sft_"  # recognisable in a leaked config or by a secret scanner
SESSION_PREFIX: Final = "sfs_"
CACHE_TTL_S: Final = 2.0  # how stale another process's revocation may be here
CACHE_MAX: Final = 10_000  # entries; the cache is dropped whole beyond this
SEEN_EVERY_S: Final = 5.0  # a session's last_seen_at is written at most this often
TOKEN_USED_EVERY_S: Final = 60.0  # a token's last_used_at likewise
DEFAULT_TOKEN_DAYS: Final = 90
MAX_TOKEN_DAYS: Final = 365
MAX_GRANT_S: Final = 30 * 86400.0
ONE_TIME_PASSWORD_CHANGED_AT: Final = datetime(1970, 1, 1, tzinfo=UTC)  # "change at next login"
# Calls that verify a password (login, password change, TOTP enrolment) cost an argon2 hash
# (~30 ms, 19 MiB) each: a bucket per source address bounds what one address can make us do.
LOGIN_RATE_PER_S: Final = 5.0
LOGIN_BURST: Final = 20.0
LOGIN_SOURCES_MAX: Final = 10_000  # buckets kept; the longest unused goes first
PHANTOMS_MAX: Final = 10_000  # names tracked for failed logins of no user
OPERATOR_ONLY: Final = "managed by the platform operator (shopfloor user ... on the server)"

BAD_LOGIN: Final = "wrong tenant, username or password"  # one answer: no user enumeration
NO_GRANT: Final = "no live access grant from that tenant"


class AccountLocked(ShopfloorError):
    """Too many failed logins in a row; the account opens again at ``locked_until``."""

    status_code = 423


class PasswordExpired(Forbidden):
    """The password is older than the policy allows (or was reset): change it first."""


class TotpRequired(Forbidden):
    """The user holds a role that logs in with a second factor."""


# ---------------------------------------------------------------------------------------------
# Plain data handed to callers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    tenant_id: int | None
    username: str
    display_name: str
    bindings: tuple[Binding, ...]
    totp_enrolled: bool
    disabled: bool
    locked_until: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: int
    user_id: int
    name: str
    scopes: frozenset[Permission] | None
    expires_at: datetime | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: int
    user_id: int
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class GrantInfo:
    id: int
    tenant_id: int
    grantee: str
    granted_by: str
    reason: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    secret: str
    otpauth_uri: str


@dataclass(slots=True)
class _Entry:
    """A resolved secret: the principal and what can end it without a database read."""

    principal: Principal
    until: float  # monotonic; re-read from the database after this
    expires_at: datetime | None
    last_seen: datetime | None  # sessions only
    idle_s: float | None


RoleSpec = Role | str | tuple[Role | str, int | None]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _bindings(s: Session, user_id: int) -> tuple[Binding, ...]:
    rows = s.scalars(
        select(RoleBinding).where(RoleBinding.user_id == user_id).order_by(RoleBinding.id)
    )
    return tuple(Binding(Role(b.role), b.tenant_id, b.asset_id) for b in rows)


def _user_info(s: Session, u: User) -> UserInfo:
    return UserInfo(
        u.id,
        u.tenant_id,
        u.username,
        u.display_name,
        _bindings(s, u.id),
        bool(u.totp_secret and u.totp_confirmed),
        u.disabled,
        u.locked_until,
        u.created_at,
    )


def _token_info(t: ApiToken) -> TokenInfo:
    scopes = None if t.scopes is None else frozenset(Permission(p) for p in json.loads(t.scopes))
    return TokenInfo(t.id, t.user_id, t.name, scopes, t.expires_at, t.created_at, t.revoked_at)


def _grant_info(g: AccessGrant, grantee: str) -> GrantInfo:
    return GrantInfo(
        g.id,
        g.tenant_id,
        grantee,
        g.granted_by,
        g.reason,
        g.created_at,
        g.expires_at,
        g.revoked_at,
    )


def _tenant_info(t: Tenant) -> TenantInfo:
    return TenantInfo(t.id, t.name, t.auto_register_signals, t.retention_days, t.created_at)


def _user_row(s: Session, tenant_id: int | None, username: str) -> User:
    """The user ``username`` of ``tenant_id`` (None: platform); another tenant's is NotFound."""
    where = User.tenant_id.is_(None) if tenant_id is None else User.tenant_id == tenant_id
    row = s.scalar(select(User).where(where, User.username == username))
    if row is None:
        raise NotFound(f"user {username!r} not found")
    return row


def _actor_name(actor: Principal | None) -> str | None:
    return None if actor is None else actor.name


def _user_obj(tenant: str | None, username: str) -> str:
    """The audit object of a login-type call, which names the tenant (no id known yet)."""
    return f"user:{username}" if tenant is None else f"user:{tenant}/{username}"


def _binding_names(bindings: Sequence[Binding]) -> list[str]:
    return [f"{b.role.value}@{b.asset_id}" if b.asset_id else b.role.value for b in bindings]


def _use_step(s: Session, user_id: int, step: int, *extra: Any) -> bool:
    """Mark TOTP ``step`` used unless it, or a later one, is already (compare-and-set).

    Of two logins racing with the same code, only one UPDATE matches: the check and the write
    are one statement, in the transaction that opens the session. ``extra`` are further
    conditions the row must meet.
    """
    result = s.execute(
        update(User)
        .where(
            User.id == user_id,
            or_(User.totp_last_step.is_(None), User.totp_last_step < step),
            *extra,
        )
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    return cast("CursorResult[Any]", result).rowcount == 1


def _delegated(actor: Principal | None) -> bool:
    """Whether ``actor`` manages users from inside a tenant (a tenant admin on the API), as
    opposed to the platform operator (the CLI) or an internal call (actor None)."""
    return actor is not None and actor.tenant is not None


class _StepUsed(Exception):
    """Inside a write: the TOTP step was taken meanwhile; roll back, count a failure."""


T = TypeVar("T")


class AuthService:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        audit: AuditLog,
        *,
        clock: Callable[[], datetime] = _utcnow,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.audit = audit
        # Public so tests can move time: every expiry, lock and TOTP step reads this clock.
        self.clock = clock
        self.monotonic = time.monotonic  # ages cache entries (CACHE_TTL_S)
        self.hasher = hasher or passwords.default_hasher()
        self._dummy_hash: str | None = None  # verified for unknown users (same timing)
        # Failed logins of names that are no (enabled) user, counted and "locked" like real
        # accounts, so a lockout answer does not tell which names exist. In memory, bounded.
        self._phantoms: dict[tuple[str | None, str], tuple[int, datetime | None]] = {}
        self._lock = threading.Lock()
        self._cache: dict[str, _Entry] = {}
        # Per-source buckets of password-checking calls (LOGIN_RATE_PER_S). Public clock so
        # tests can move it; a separate one from ``monotonic`` so cache tests stay apart.
        self.rate_clock: Callable[[], float] = time.monotonic
        self._buckets: dict[str, TokenBucket] = {}

    # -- the resolve cache -------------------------------------------------------------------

    def _changed(self) -> None:
        """Something that may end a credential changed: forget every resolved secret."""
        self._cache = {}

    def _dummy_verify(self, password: str) -> None:
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        passwords.verify(self.hasher, self._dummy_hash, password)

    @contextmanager
    def _write(self, *, invalidate: bool = True) -> Iterator[Session]:
        """A write transaction; ``invalidate`` False for writes that neither end nor alter a
        credential (a new session or token, a login counter), which keep the cache."""
        with self.registry._write() as s:
            yield s
        if invalidate:
            self._changed()  # after the commit, so no reader re-caches the old state

    def _throttle(self, source: str) -> None:
        """Count one password-checking call of ``source``; RateLimited (429) beyond the rate."""
        now = self.rate_clock()
        with self._lock:
            bucket = self._buckets.pop(source, None) or TokenBucket.full(
                LOGIN_RATE_PER_S, LOGIN_BURST, now
            )
            while len(self._buckets) >= LOGIN_SOURCES_MAX:
                del self._buckets[next(iter(self._buckets))]
            self._buckets[source] = bucket  # re-inserted last: eviction takes the least recent
            wait = bucket.take(1, now)
        if wait:
            raise RateLimited(
                f"too many login attempts from this address (at most {LOGIN_RATE_PER_S:g}/s): "
                "wait and retry",
                wait,
            )

    def _check_delegated(
        self,
        actor: Principal | None,
        s: Session,
        row: User | None,
        pairs: Sequence[tuple[Role, int | None]] = (),
    ) -> None:
        """Forbidden when a tenant-level actor would grant a role beyond DELEGATED_ROLES, or
        change a user (``row``) who holds one: the platform operator manages those."""
        if not _delegated(actor):
            return
        granted = sorted(r.value for r in {r for r, _ in pairs} - DELEGATED_ROLES)
        if granted:
            allowed = ", ".join(sorted(r.value for r in DELEGATED_ROLES))
            raise Forbidden(
                f"role {', '.join(granted)} is {OPERATOR_ONLY}; a tenant admin grants {allowed}"
            )
        if row is not None:
            held = sorted(r.value for r in {b.role for b in _bindings(s, row.id)} - DELEGATED_ROLES)
            if held:
                raise Forbidden(f"user {row.username!r} ({', '.join(held)}) is {OPERATOR_ONLY}")

    def _user_change(
        self,
        tenant_id: int | None,
        username: str,
        action: str,
        change: Callable[[Session, User], T],
        *,
        actor: Principal | None,
        source: str,
    ) -> T:
        """Look the user up, check the actor may change them, apply ``change``, audit it."""
        with self._write() as s:
            row = _user_row(s, tenant_id, username)
            self._check_delegated(actor, s, row)
            out = change(s, row)
        self.audit.record(
            action, f"user:{username}", "ok", principal=actor, tenant_id=tenant_id, source=source
        )
        return out

    # -- users -------------------------------------------------------------------------------

    def _check_bindings(
        self, s: Session, tenant_id: int | None, roles: Sequence[RoleSpec]
    ) -> list[tuple[Role, int | None]]:
        """The roles as (role, asset) pairs, checked for the user's level and duties."""
        out: list[tuple[Role, int | None]] = []
        for spec in roles:
            r, asset_id = spec if isinstance(spec, tuple) else (spec, None)
            r = role(r)
            if tenant_id is None:
                if r not in PLATFORM_ROLES:
                    allowed = ", ".join(sorted(p.value for p in PLATFORM_ROLES))
                    raise BadInput(
                        f"role {r.value} binds inside a tenant; a platform user may hold {allowed}",
                        "roles",
                    )
                if asset_id is not None:
                    raise BadInput("a platform role cannot bind to an asset", "roles")
            elif r not in TENANT_ROLES:
                raise BadInput(f"role {r.value} is for platform users only", "roles")
            if asset_id is not None:
                a = s.get(Asset, asset_id)
                if a is None or a.tenant_id != tenant_id:
                    raise BadInput(f"asset {asset_id} not found in this tenant", "roles")
            if (r, asset_id) not in out:
                out.append((r, asset_id))
        check_role_set(r for r, _ in out)
        return out

    def create_user(
        self,
        tenant_id: int | None,
        username: str,
        password: str,
        roles: Sequence[RoleSpec] = (),
        *,
        display_name: str = "",
        actor: Principal | None = None,
        source: str = "-",
        must_change_password: bool = False,
    ) -> UserInfo:
        """A user of ``tenant_id`` (None: platform level) holding ``roles`` there.

        A role may come with an asset id: it then binds to that subtree only. A tenant-level
        ``actor`` grants DELEGATED_ROLES only.
        """
        check_name(username, "username")
        if len(display_name) > 200:
            raise BadInput("display_name must be at most 200 characters", "display_name")
        passwords.check_policy(password, username, self.settings)
        hashed = self.hasher.hash(password)  # ~30 ms: not inside the write transaction
        try:
            with self._write(invalidate=False) as s:  # a new user has no credential yet
                if tenant_id is not None and s.get(Tenant, tenant_id) is None:
                    raise NotFound(f"tenant {tenant_id} not found")
                pairs = self._check_bindings(s, tenant_id, roles)
                self._check_delegated(actor, s, None, pairs)
                row = User(
                    tenant_id=tenant_id,
                    username=username,
                    display_name=display_name,
                    password_hash=hashed,
                    password_changed_at=(
                        ONE_TIME_PASSWORD_CHANGED_AT if must_change_password else self.clock()
                    ),
                    created_at=self.clock(),
                )
                s.add(row)
                s.flush()
                for r, asset_id in pairs:
                    s.add(
                        RoleBinding(
                            user_id=row.id, role=r.value, tenant_id=tenant_id, asset_id=asset_id
                        )
                    )
                s.flush()
                info = _user_info(s, row)
        except IntegrityError:
            raise Conflict(
                f"user {username!r} exists already",
            ) from None
        self.audit.record(
            "user.created",
            f"user:{username}",
            "ok",
            principal=actor,
            tenant_id=tenant_id,
            source=source,
            details={"roles": _binding_names(info.bindings)},
        )
        return info

    def get_user(self, tenant_id: int | None, username: str) -> UserInfo:
        with self.registry._read() as s:
            return _user_info(s, _user_row(s, tenant_id, username))

    def user_by_id(self, user_id: int) -> UserInfo:
        with self.registry._read() as s:
            row = s.get(User, user_id)
            if row is None:
                raise NotFound(f"user {user_id} not found")
            return _user_info(s, row)

    def list_users(self, tenant_id: int | None) -> list[UserInfo]:
        where = User.tenant_id.is_(None) if tenant_id is None else User.tenant_id == tenant_id
        with self.registry._read() as s:
            rows = s.scalars(select(User).where(where).order_by(User.username))
            return [_user_info(s, u) for u in rows]

    def update_user(
        self,
        tenant_id: int | None,
        username: str,
        *,
        disabled: bool | None = None,
        display_name: str | None = None,
        actor: Principal | None = None,
        source: str = "-",
    ) -> UserInfo:
        """Disable/enable a user (a disabled user's sessions and tokens stop at once)."""
        if display_name is not None and len(display_name) > 200:
            raise BadInput("display_name must be at most 200 characters", "display_name")
        with self._write() as s:
            row = _user_row(s, tenant_id, username)
            self._check_delegated(actor, s, row)
            if disabled is True and actor is not None and actor.user_id == row.id:
                raise BadInput("you cannot disable yourself", "disabled")
            changes: dict[str, Any] = {}
            if disabled is not None and disabled != row.disabled:
                row.disabled = disabled
                changes["disabled"] = disabled
                if disabled:
                    self._end_sessions(s, row.id)
            if display_name is not None and display_name != row.display_name:
                row.display_name = display_name
                changes["display_name"] = display_name
            info = _user_info(s, row)
        if changes:
            action = "user.changed"
            if "disabled" in changes:
                action = "user.disabled" if changes["disabled"] else "user.enabled"
            self.audit.record(
                action,
                f"user:{username}",
                "ok",
                principal=actor,
                tenant_id=tenant_id,
                source=source,
                details=changes,
            )
        return info

    def delete_user(
        self,
        tenant_id: int | None,
        username: str,
        *,
        actor: Principal | None = None,
        source: str = "-",
    ) -> None:
        def change(s: Session, row: User) -> None:
            if actor is not None and actor.user_id == row.id:
                raise BadInput("you cannot delete yourself", "username")
            # SQLite enforces ON DELETE CASCADE only with foreign keys on; delete explicitly.
            for model in (RoleBinding, ApiToken, UserSession):
                s.execute(delete(model).where(model.user_id == row.id))
            s.execute(delete(AccessGrant).where(AccessGrant.grantee_id == row.id))
            s.delete(row)

        self._user_change(tenant_id, username, "user.deleted", change, actor=actor, source=source)

    def set_roles(
        self,
        tenant_id: int | None,
        username: str,
        roles: Sequence[RoleSpec],
        *,
        actor: Principal | None = None,
        source: str = "-",
    ) -> UserInfo:
        """Replace the user's role bindings with ``roles``; ends all the user's sessions.

        A session opened before a promotion must not carry the new role: it may have been
        opened without the second factor the new role needs. (Tokens keep the permissions
        they were issued with as their scopes, so a promotion does not widen them either.)
        """
        with self._write() as s:
            row = _user_row(s, tenant_id, username)
            pairs = self._check_bindings(s, tenant_id, roles)
            self._check_delegated(actor, s, row, pairs)
            if (
                actor is not None
                and actor.user_id == row.id
                and tenant_id is not None
                and not any(r is Role.TENANT_ADMIN and a is None for r, a in pairs)
                and any(
                    b.role is Role.TENANT_ADMIN and b.asset_id is None for b in _bindings(s, row.id)
                )
            ):
                raise BadInput(
                    "you cannot remove your own tenant_admin role (you would lock yourself "
                    "out); ask another tenant admin",
                    "roles",
                )
            before = _binding_names(_bindings(s, row.id))
            s.execute(delete(RoleBinding).where(RoleBinding.user_id == row.id))
            for r, asset_id in pairs:
                s.add(
                    RoleBinding(
                        user_id=row.id, role=r.value, tenant_id=tenant_id, asset_id=asset_id
                    )
                )
            s.flush()
            info = _user_info(s, row)
            ended = self._end_sessions(s, row.id)
        self.audit.record(
            "user.roles.changed",
            f"user:{username}",
            "ok",
            principal=actor,
            tenant_id=tenant_id,
            source=source,
            details={
                "before": before,
                "after": _binding_names(info.bindings),
                "sessions_ended": ended,
            },
        )
        return info

    def unlock(
        self,
        tenant_id: int | None,
        username: str,
        *,
        actor: Principal | None = None,
        source: str = "-",
    ) -> UserInfo:
        def change(s: Session, row: User) -> UserInfo:
            row.locked_until = None
            row.failed_logins = 0
            return _user_info(s, row)

        return self._user_change(
            tenant_id, username, "user.unlocked", change, actor=actor, source=source
        )

    def reset_password(
        self,
        tenant_id: int | None,
        username: str,
        *,
        actor: Principal | None = None,
        source: str = "-",
    ) -> str:
        """Set a random one-time password, returned once: the user must change it at login.

        The reset also ends the user's sessions and clears a lock, so the user can log in.
        """
        one_time = secrets.token_urlsafe(15) + "-Aa1"  # 20+ characters, every class
        hashed = self.hasher.hash(one_time)

        def change(s: Session, row: User) -> None:
            row.password_history = json.dumps(
                [row.password_hash, *json.loads(row.password_history)][
                    : self.settings.password_history
                ]
            )
            row.password_hash = hashed
            row.password_changed_at = ONE_TIME_PASSWORD_CHANGED_AT
            row.locked_until = None
            row.failed_logins = 0
            self._end_sessions(s, row.id)

        self._user_change(
            tenant_id, username, "user.password.reset", change, actor=actor, source=source
        )
        return one_time

    def reset_totp(
        self,
        tenant_id: int | None,
        username: str,
        *,
        actor: Principal | None = None,
        source: str = "-",
    ) -> None:
        """Forget the user's TOTP secret: they enrol again at their next login."""

        def change(s: Session, row: User) -> None:
            row.totp_secret = None
            row.totp_confirmed = False
            row.totp_last_step = None
            self._end_sessions(s, row.id)

        self._user_change(
            tenant_id, username, "user.totp.reset", change, actor=actor, source=source
        )

    def _end_sessions(self, s: Session, user_id: int) -> int:
        """End the user's open sessions; how many there were."""
        result = s.execute(
            update(UserSession)
            .where(UserSession.user_id == user_id, UserSession.ended_at.is_(None))
            .values(ended_at=self.clock())
            .execution_options(synchronize_session=False)
        )
        return int(cast("CursorResult[Any]", result).rowcount or 0)

    # -- passwords and login -----------------------------------------------------------------

    def _password_expired(self, row: User) -> bool:
        if row.password_changed_at <= ONE_TIME_PASSWORD_CHANGED_AT:
            return True
        days = self.settings.password_max_age_days
        return bool(days) and self.clock() - row.password_changed_at > timedelta(days=days)

    def _check_password(
        self, tenant: str | None, username: str, password: str, source: str, action: str
    ) -> User:
        """The user if ``password`` is theirs and they are not locked; counts failures.

        Unknown tenant, unknown user, disabled user and wrong password give one answer, and
        take as long (an argon2 verify runs in every case). Every caller verifies a password,
        so this is where a source address is rate limited (before any argon2 work).
        """
        self._throttle(source)
        if not isinstance(password, str) or len(password) > passwords.MAX_LENGTH:
            password = ""
        now = self.clock()
        with self.registry._read() as s:
            q = select(User).where(User.username == username)
            if tenant is None:
                q = q.where(User.tenant_id.is_(None))
            else:
                q = q.join(Tenant, Tenant.id == User.tenant_id).where(Tenant.name == tenant)
            row = s.scalar(q)
        obj = _user_obj(tenant, username)

        def refused(reason: str, tenant_id: int | None = None) -> None:
            self.audit.record(
                action,
                obj,
                "failed",
                actor=username,
                tenant_id=tenant_id,
                source=source,
                details={"reason": reason},
            )

        if row is None:
            self._dummy_verify(password)
            refused("bad credentials")
            raise self._phantom_failed(tenant, username)
        if row.locked_until is not None and row.locked_until > now:
            self._dummy_verify(password)
            refused("locked", row.tenant_id)
            raise AccountLocked(f"account locked until {row.locked_until.isoformat()}")
        ok = passwords.verify(self.hasher, row.password_hash, password)
        if ok and not row.disabled:
            return row
        if row.disabled:
            refused("disabled", row.tenant_id)
            raise self._phantom_failed(tenant, username)
        raise self._failed(row.id, username, obj, source, action)

    def _phantom_failed(self, tenant: str | None, username: str) -> ShopfloorError:
        """Count a failed login of a name that is no enabled user; the error to raise.

        Answered as for a real account: 401, and 423 after the same number of failures.
        """
        now = self.clock()
        key = (tenant, username)
        with self._lock:
            count, until = self._phantoms.pop(key, (0, None))
            if until is not None and until > now:
                self._phantoms[key] = (count, until)
                return AccountLocked(f"account locked until {until.isoformat()}")
            count += 1
            if count >= self.settings.login_max_failures:
                count, until = 0, now + timedelta(seconds=self.settings.login_lockout_s)
            else:
                until = None
            if len(self._phantoms) >= PHANTOMS_MAX:
                self._evict_phantom(now)  # guessing many names must not grow memory
            self._phantoms[key] = (count, until)  # (re)inserted last: the newest
        if until is not None:
            return AccountLocked(f"account locked until {until.isoformat()}")
        return Unauthorized(BAD_LOGIN)

    def _evict_phantom(self, now: datetime) -> None:
        """Forget one phantom: the oldest that is not locked now, else the oldest of all.

        A flood of new names then pushes out other guesses first, not a live lock (which
        would answer 401 again where a real account still answers 423).
        """
        for key, (_, until) in self._phantoms.items():
            if until is None or until <= now:
                del self._phantoms[key]
                return  # the loop ends here, so deleting while iterating is safe
        del self._phantoms[next(iter(self._phantoms))]

    def _failed(
        self, user_id: int, username: str, obj: str, source: str, action: str
    ) -> ShopfloorError:
        """Count a failed attempt, lock the account at the limit; the error to raise."""
        now = self.clock()
        # The counter is no credential: only a lock (which ends sessions) drops the cache.
        with self.registry._write() as s:
            row = s.get(User, user_id)
            assert row is not None
            row.failed_logins += 1
            locked = row.failed_logins >= self.settings.login_max_failures
            if locked:
                row.locked_until = now + timedelta(seconds=self.settings.login_lockout_s)
                row.failed_logins = 0
                self._end_sessions(s, row.id)
            until = row.locked_until
            tenant_id = row.tenant_id
        self.audit.record(
            action,
            obj,
            "failed",
            actor=username,
            tenant_id=tenant_id,
            source=source,
            details={"reason": "bad credentials"},
        )
        if not locked:
            return Unauthorized(BAD_LOGIN)
        self._changed()
        assert until is not None
        self.audit.record(
            "user.locked",
            obj,
            "ok",
            actor=username,
            tenant_id=tenant_id,
            source=source,
            details={"until": until.isoformat()},
        )
        return AccountLocked(f"account locked until {until.isoformat()}")

    def _totp_step(self, row: User, code: str | None, obj: str, source: str, action: str) -> int:
        """The step of the user's TOTP ``code`` (TotpRequired without one; a wrong code counts
        as a failed login). The step is only a candidate: ``_use_step`` takes it."""
        assert row.totp_secret is not None
        if not code:
            raise TotpRequired("TOTP code required for your role (field totp)")
        step = totp.match(row.totp_secret, code, self.clock().timestamp(), row.totp_last_step)
        if step is None:
            raise self._failed(row.id, row.username, obj, source, action)
        return step

    def login(
        self,
        tenant: str | None,
        username: str,
        password: str,
        totp_code: str | None = None,
        *,
        source: str = "-",
    ) -> tuple[SessionInfo, str, UserInfo]:
        """A new session of the user: its info, its secret (returned once) and the user."""
        row = self._check_password(tenant, username, password, source, "login")
        obj = _user_obj(tenant, username)
        if self._password_expired(row):
            self.audit.record(
                "login",
                obj,
                "failed",
                actor=username,
                tenant_id=row.tenant_id,
                source=source,
                details={"reason": "password expired"},
            )
            raise PasswordExpired("password expired: change it (POST /api/v1/auth/password)")
        with self.registry._read() as s:
            roles = {b.role for b in _bindings(s, row.id)}
        step: int | None = None
        if roles & MFA_ROLES:
            if not (row.totp_secret and row.totp_confirmed):
                raise TotpRequired(
                    "TOTP enrolment required: POST /api/v1/auth/totp/enroll, then "
                    "/api/v1/auth/totp/confirm with a code from your app"
                )
            step = self._totp_step(row, totp_code, obj, source, "login")
        now = self.clock()
        secret = SESSION_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._write(invalidate=False) as s:  # a new session alters no other one
                if step is not None and not _use_step(s, row.id, step):
                    raise _StepUsed  # a concurrent login used this code first
                u = s.get(User, row.id)
                assert u is not None
                u.failed_logins = 0
                u.last_login_at = now
                sess = UserSession(
                    user_id=u.id,
                    token_hash=_digest(secret),
                    source=source[:200],
                    created_at=now,
                    last_seen_at=now,
                    expires_at=now + timedelta(seconds=self.settings.session_max_age_s),
                )
                s.add(sess)
                s.flush()
                info = SessionInfo(sess.id, u.id, sess.created_at, sess.expires_at)
                user = _user_info(s, u)
        except _StepUsed:
            raise self._failed(row.id, username, obj, source, "login") from None
        self.audit.record(
            "login",
            obj,
            "ok",
            actor=username,
            tenant_id=row.tenant_id,
            role=",".join(r.value for r in sorted(roles)) or "-",
            source=source,
            details={"session": info.id, "mfa": step is not None},
        )
        return info, secret, user

    def logout(self, principal: Principal, *, source: str = "-") -> None:
        if principal.session_id is None:
            raise BadInput(
                "logout ends a login session; revoke an API token with "
                "DELETE /api/v1/auth/tokens/{id}",
                "credential",
            )
        with self._write() as s:
            s.execute(
                update(UserSession)
                .where(UserSession.id == principal.session_id, UserSession.ended_at.is_(None))
                .values(ended_at=self.clock())
            )
        self.audit.record(
            "logout",
            f"session:{principal.session_id}",
            "ok",
            principal=principal,
            tenant_id=_tid(principal),
            source=source,
        )

    def change_password(
        self,
        tenant: str | None,
        username: str,
        old_password: str,
        new_password: str,
        totp_code: str | None = None,
        *,
        source: str = "-",
    ) -> None:
        """Change a password, proving the old one (works while the old one has expired).

        A user with a confirmed TOTP factor proves it too (``totp_code``): the password
        alone must not let a thief lock the owner out and end their sessions. A user not
        enrolled yet changes it with the password only, as they enrol with it (the bootstrap).
        """
        row = self._check_password(tenant, username, old_password, source, "password.change")
        obj = _user_obj(tenant, username)
        step = None
        if row.totp_secret and row.totp_confirmed:
            step = self._totp_step(row, totp_code, obj, source, "password.change")
        earlier = [row.password_hash, *json.loads(row.password_history)]
        passwords.check_policy(
            new_password, username, self.settings, hasher=self.hasher, earlier=earlier
        )
        hashed = self.hasher.hash(new_password)
        try:
            with self._write() as s:
                if step is not None and not _use_step(s, row.id, step):
                    raise _StepUsed
                u = s.get(User, row.id)
                assert u is not None
                u.password_history = json.dumps(earlier[: self.settings.password_history])
                u.password_hash = hashed
                u.password_changed_at = self.clock()
                u.failed_logins = 0
                self._end_sessions(s, u.id)
        except _StepUsed:
            raise self._failed(row.id, username, obj, source, "password.change") from None
        self.audit.record(
            "password.changed",
            obj,
            "ok",
            actor=username,
            tenant_id=row.tenant_id,
            source=source,
            details={"mfa": step is not None},
        )

    # -- TOTP enrolment ----------------------------------------------------------------------

    def enroll_totp(
        self, tenant: str | None, username: str, password: str, *, source: str = "-"
    ) -> TotpEnrolment:
        """A new TOTP secret for a user who has not confirmed one yet (password proves it).

        The first factor is enrolled with the password alone: there is nothing else to
        prove yet (the CLI made the account with that password). Once confirmed, the factor
        is replaced only by the platform operator (``shopfloor user totp-reset``).
        """
        row = self._check_password(tenant, username, password, source, "totp.enroll")
        enrolled = Conflict(
            "TOTP is enrolled already; the platform operator resets it (shopfloor user totp-reset)"
        )
        if row.totp_secret and row.totp_confirmed:
            raise enrolled
        secret = totp.new_secret()
        with self._write(invalidate=False) as s:
            result = s.execute(
                update(User)
                .where(User.id == row.id, User.totp_confirmed.is_(False))  # not confirmed since
                .values(totp_secret=secret, totp_confirmed=False, totp_last_step=None)
                .execution_options(synchronize_session=False)
            )
            if cast("CursorResult[Any]", result).rowcount != 1:
                raise enrolled
        account = username if tenant is None else f"{username}@{tenant}"
        return TotpEnrolment(secret, totp.provisioning_uri(secret, account))

    def confirm_totp(
        self, tenant: str | None, username: str, password: str, code: str, *, source: str = "-"
    ) -> None:
        """Activate the enrolled secret with a first code from the user's app."""
        row = self._check_password(tenant, username, password, source, "totp.confirm")
        if not row.totp_secret or row.totp_confirmed:
            raise Conflict("no TOTP enrolment to confirm: start with /api/v1/auth/totp/enroll")
        step = totp.match(row.totp_secret, code, self.clock().timestamp(), row.totp_last_step)
        if step is None:
            raise BadInput("wrong TOTP code", "code")
        with self._write(invalidate=False) as s:
            # The same secret, still unconfirmed, the step unused: else a racing call won.
            if not _use_step(
                s, row.id, step, User.totp_secret == row.totp_secret, User.totp_confirmed.is_(False)
            ):
                raise Conflict("the TOTP enrolment changed meanwhile: enrol again")
            s.execute(
                update(User)
                .where(User.id == row.id)
                .values(totp_confirmed=True)
                .execution_options(synchronize_session=False)
            )
        self.audit.record(
            "totp.enrolled",
            _user_obj(tenant, username),
            "ok",
            actor=username,
            tenant_id=row.tenant_id,
            source=source,
        )

    # -- API tokens --------------------------------------------------------------------------

    def issue_token(
        self,
        user_id: int,
        name: str,
        scopes: Collection[Permission | str] | None = None,
        expires_in_s: float | None = None,
        *,
        actor: Principal | None = None,
        source: str = "-",
    ) -> tuple[TokenInfo, str]:
        """A new API token of the user; the secret is returned once and stored hashed.

        ``scopes`` narrow the user's permissions; None stores the permissions the user holds
        now, so a later promotion does not widen the token (the token's power is its user's
        current permissions within its scopes, so a demotion still narrows it).
        ``expires_in_s`` None means the default of DEFAULT_TOKEN_DAYS; no token lives beyond
        MAX_TOKEN_DAYS. Only a login session (or the CLI) makes tokens, never a token: a
        leaked token must not renew itself beyond its own expiry or revocation.
        """
        if actor is not None and actor.kind is PrincipalKind.TOKEN:
            raise Forbidden(
                "an API token cannot create API tokens: log in (POST /api/v1/auth/login) and "
                "create it with the login session"
            )
        check_name(name, "name")
        if expires_in_s is None:
            expires_in_s = DEFAULT_TOKEN_DAYS * 86400.0
        if not 0 < expires_in_s <= MAX_TOKEN_DAYS * 86400.0:
            raise BadInput(f"a token expires within 1-{MAX_TOKEN_DAYS} days", "expires_in_days")
        wanted = None if scopes is None else frozenset(permission(p) for p in scopes)
        if wanted is not None and not wanted:
            raise BadInput("scopes must name at least one permission, or be null for all", "scopes")
        now = self.clock()
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._write(invalidate=False) as s:  # a new token alters no other credential
            user = s.get(User, user_id)
            if user is None:
                raise NotFound(f"user {user_id} not found")
            if user.disabled:
                raise BadInput("the user is disabled", "user")
            held = permissions_of(b.role for b in _bindings(s, user_id))
            if user.tenant_id is None:
                # What a tenant's access grant gives a platform user (each use checked
                # against a live grant): else no platform token could ever use a grant.
                held |= permissions_of([GRANTED_ROLE])
            if wanted is not None and not wanted <= held:
                extra = ", ".join(sorted(p.value for p in wanted - held))
                raise BadInput(f"scopes exceed the user's permissions: {extra}", "scopes")
            kept = held if wanted is None else wanted
            row = ApiToken(
                user_id=user_id,
                name=name,
                token_hash=_digest(secret),
                scopes=json.dumps(sorted(p.value for p in kept)),
                expires_at=now + timedelta(seconds=expires_in_s),
                created_at=now,
            )
            s.add(row)
            s.flush()
            info = _token_info(row)
            username, tenant_id = user.username, user.tenant_id
        self.audit.record(
            "token.issued",
            f"token:{info.id}",
            "ok",
            principal=actor,
            actor=None if actor else username,
            tenant_id=tenant_id,
            source=source,
            details={
                "user": username,
                "name": name,
                "scopes": sorted(kept),
                "all_held": wanted is None,
            },
        )
        return info, secret

    def list_tokens(self, user_id: int) -> list[TokenInfo]:
        with self.registry._read() as s:
            rows = s.scalars(
                select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
            )
            return [_token_info(t) for t in rows]

    def revoke_token(
        self, user_id: int, token_id: int, *, actor: Principal | None = None, source: str = "-"
    ) -> TokenInfo:
        """Revoke one of the user's tokens; another user's is NotFound, like a missing one."""
        with self._write() as s:
            row = s.get(ApiToken, token_id)
            if row is None or row.user_id != user_id:
                raise NotFound(f"token {token_id} not found")
            if row.revoked_at is None:
                row.revoked_at = self.clock()
            info = _token_info(row)
            user = s.get(User, user_id)
            tenant_id = user.tenant_id if user else None
        self.audit.record(
            "token.revoked",
            f"token:{token_id}",
            "ok",
            principal=actor,
            tenant_id=tenant_id,
            source=source,
        )
        return info

    # -- resolving secrets -------------------------------------------------------------------

    def resolve(self, secret: str, source: str) -> Principal | None:
        """The principal of a session or API token secret; None if it is neither."""
        if secret.startswith(TOKEN_PREFIX):
            is_session = False
        elif secret.startswith(SESSION_PREFIX):
            is_session = True
        else:
            return None  # the hot ingest path: no hashing, no query
        digest = _digest(secret)
        now = self.clock()
        cache = self._cache
        entry = cache.get(digest)
        if entry is None or entry.until <= self.monotonic():
            entry = self._load_session(digest, now) if is_session else self._load_token(digest, now)
            if entry is None:
                cache.pop(digest, None)
                return None
            if len(cache) >= CACHE_MAX:
                cache.clear()  # not replaced: a concurrent invalidation must win
            cache[digest] = entry
        if entry.expires_at is not None and now >= entry.expires_at:
            cache.pop(digest, None)
            return None
        if entry.last_seen is not None and entry.idle_s is not None:
            idle = (now - entry.last_seen).total_seconds()
            if idle >= entry.idle_s:
                self._end_session(entry.principal.session_id, "idle")
                return None
            if idle >= SEEN_EVERY_S:
                entry.last_seen = now
                with self.registry._write() as s:
                    s.execute(
                        update(UserSession)
                        .where(UserSession.id == entry.principal.session_id)
                        .values(last_seen_at=now)
                    )
        return entry.principal

    def _end_session(self, session_id: int | None, why: str) -> None:
        with self._write() as s:
            s.execute(
                update(UserSession)
                .where(UserSession.id == session_id)
                .values(ended_at=self.clock())
            )
        self.audit.record(
            "session.ended", f"session:{session_id}", "ok", actor="-", details={"reason": why}
        )

    def _principal(
        self, s: Session, user: User, kind: PrincipalKind, name: str, **extra: Any
    ) -> Principal | None:
        """The user's principal; None when their tenant is gone (the credential is dead:
        resolve answers None, so the caller gets 401, not a 404 about a tenant)."""
        tenant = None
        if user.tenant_id is not None:
            t = s.get(Tenant, user.tenant_id)
            if t is None:
                return None
            tenant = _tenant_info(t)
        return Principal(
            kind=kind,
            name=name,
            tenant=tenant,
            bindings=_bindings(s, user.id),
            user_id=user.id,
            **extra,
        )

    def _load_token(self, digest: str, now: datetime) -> _Entry | None:
        with self.registry._read() as s:
            row = s.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_hash == digest)
            ).first()
            if row is None:
                return None
            tok, user = row[0], row[1]
            if tok.revoked_at is not None or user.disabled:
                return None
            if tok.expires_at is not None and tok.expires_at <= now:
                return None
            info = _token_info(tok)
            principal = self._principal(
                s,
                user,
                PrincipalKind.TOKEN,
                f"token:{tok.name}@{user.username}",
                token_id=tok.id,
                scopes=info.scopes,
            )
            if principal is None:
                return None
            last_used = tok.last_used_at
        if last_used is None or (now - last_used).total_seconds() >= TOKEN_USED_EVERY_S:
            with self.registry._write() as s:
                s.execute(update(ApiToken).where(ApiToken.id == info.id).values(last_used_at=now))
        return _Entry(principal, self.monotonic() + CACHE_TTL_S, tok.expires_at, None, None)

    def _load_session(self, digest: str, now: datetime) -> _Entry | None:
        with self.registry._read() as s:
            row = s.execute(
                select(UserSession, User)
                .join(User, User.id == UserSession.user_id)
                .where(UserSession.token_hash == digest)
            ).first()
            if row is None:
                return None
            sess, user = row[0], row[1]
            if sess.ended_at is not None or user.disabled or sess.expires_at <= now:
                return None
            if user.locked_until is not None and user.locked_until > now:
                return None
            principal = self._principal(
                s, user, PrincipalKind.USER, user.username, session_id=sess.id
            )
            if principal is None:
                return None
        return _Entry(
            principal,
            self.monotonic() + CACHE_TTL_S,
            sess.expires_at,
            sess.last_seen_at,
            self.settings.session_idle_timeout_s,
        )

    # -- access grants -----------------------------------------------------------------------

    def create_grant(
        self,
        tenant_id: int,
        grantee: str,
        duration_s: float,
        reason: str,
        *,
        actor: Principal | None = None,
        source: str = "-",
    ) -> GrantInfo:
        """Let the platform user ``grantee`` read the tenant's data for ``duration_s``."""
        if not 0 < duration_s <= MAX_GRANT_S:
            raise BadInput(f"a grant lasts up to {int(MAX_GRANT_S // 3600)} hours", "duration")
        if not isinstance(reason, str) or not reason.strip():
            raise BadInput("a grant needs a reason (it goes into the audit log)", "reason")
        now = self.clock()
        with self._write(invalidate=False) as s:  # grants are read per request, never cached
            user = s.scalar(select(User).where(User.tenant_id.is_(None), User.username == grantee))
            if user is None:
                raise NotFound(f"platform user {grantee!r} not found")
            row = AccessGrant(
                tenant_id=tenant_id,
                grantee_id=user.id,
                granted_by=_actor_name(actor) or "-",
                reason=reason,
                created_at=now,
                expires_at=now + timedelta(seconds=duration_s),
            )
            s.add(row)
            s.flush()
            info = _grant_info(row, grantee)
        self.audit.record(
            "access.grant.created",
            f"grant:{info.id}",
            "ok",
            principal=actor,
            tenant_id=tenant_id,
            source=source,
            details={
                "grantee": grantee,
                "reason": reason,
                "expires_at": info.expires_at.isoformat(),
            },
        )
        return info

    def list_grants(self, tenant_id: int) -> list[GrantInfo]:
        with self.registry._read() as s:
            rows = s.execute(
                select(AccessGrant, User.username)
                .join(User, User.id == AccessGrant.grantee_id)
                .where(AccessGrant.tenant_id == tenant_id)
                .order_by(AccessGrant.id)
            ).all()
            return [_grant_info(g, name) for g, name in rows]

    def revoke_grant(
        self, tenant_id: int, grant_id: int, *, actor: Principal | None = None, source: str = "-"
    ) -> GrantInfo:
        with self._write(invalidate=False) as s:  # likewise
            row = s.get(AccessGrant, grant_id)
            if row is None or row.tenant_id != tenant_id:
                raise NotFound(f"access grant {grant_id} not found")
            if row.revoked_at is None:
                row.revoked_at = self.clock()
            grantee = s.get(User, row.grantee_id)
            info = _grant_info(row, grantee.username if grantee else "-")
        self.audit.record(
            "access.grant.revoked",
            f"grant:{grant_id}",
            "ok",
            principal=actor,
            tenant_id=tenant_id,
            source=source,
        )
        return info

    def enter_tenant(self, principal: Principal, tenant: str, source: str) -> Principal:
        """``principal`` (platform level) inside ``tenant`` under a live access grant.

        The answer is the same Forbidden whether the tenant exists or not. Every use is
        audited; the grant gives GRANTED_ROLE (reading) and nothing more.
        """
        if principal.user_id is None or principal.tenant is not None:
            raise Forbidden(NO_GRANT)
        now = self.clock()
        with self.registry._read() as s:
            t = s.scalar(select(Tenant).where(Tenant.name == tenant))
            grant = None
            if t is not None:
                grant = s.scalar(
                    select(AccessGrant)
                    .where(
                        AccessGrant.tenant_id == t.id,
                        AccessGrant.grantee_id == principal.user_id,
                        AccessGrant.revoked_at.is_(None),
                        AccessGrant.expires_at > now,
                    )
                    .order_by(AccessGrant.expires_at.desc())
                )
            info = None if t is None else _tenant_info(t)
        if grant is None or info is None:
            self.audit.record(
                "access.grant.used",
                f"tenant:{tenant}",
                "denied",
                principal=principal,
                tenant_id=info.id if info else None,
                source=source,
            )
            raise Forbidden(NO_GRANT)
        self.audit.record(
            "access.grant.used",
            f"tenant:{tenant}",
            "ok",
            principal=principal,
            tenant_id=info.id,
            source=source,
            details={"grant": grant.id},
        )
        return replace(
            principal,
            tenant=info,
            bindings=(*principal.bindings, Binding(GRANTED_ROLE, info.id)),
            grant_id=grant.id,
        )


def _tid(principal: Principal) -> int | None:
    return principal.tenant.id if principal.tenant else None
