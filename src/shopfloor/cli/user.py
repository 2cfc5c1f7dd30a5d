"""``shopfloor user``: users, their roles, locks, passwords, TOTP and API tokens.

Works on the registry directly (like ``shopfloor device``), so it makes the first platform
admin and the first tenant admin before anyone can log in, and works while the platform runs
(a change reaches a running server within auth.CACHE_TTL_S). Every change is audited with
the actor ``cli:<os user>``. Heavy modules are imported inside the commands.

This is the platform operator's tool: it alone makes and manages security admins and auditors
(of a tenant or the platform). A tenant admin on the API grants only tenant_admin, engineer,
operator and viewer, and cannot change a user who holds another role (docs/security.md).
"""

from __future__ import annotations

import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from shopfloor.security.auth import AuthService, UserInfo
    from shopfloor.security.principal import Principal

app = typer.Typer(
    help=(
        "Users of a tenant or of the platform: create, roles, disable, unlock, reset password"
        " or TOTP, API tokens. Security admins and auditors are managed here only (the API"
        " refuses).\n\nExample: shopfloor user create alice --tenant acme "
        "--role tenant_admin -d shopfloor-data"
    ),
    no_args_is_help=True,
)
token_app = typer.Typer(
    help="API tokens of a user (the secret is printed once).", no_args_is_help=True
)
app.add_typer(token_app, name="token")
console = Console(stderr=True)

Username = Annotated[str, typer.Argument(help="The user's name (unique in its tenant).")]
TenantOpt = Annotated[
    str | None, typer.Option("--tenant", "-t", help="Tenant of the user (or --platform).")
]
PlatformOpt = Annotated[
    bool, typer.Option("--platform", help="A platform-level user (platform_admin, ...).")
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", "-d", help="Folder holding all platform data.", envvar="SHOPFLOOR_DATA_DIR"
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Platform settings YAML (password policy, ...).",
        exists=True,
        dir_okay=False,
    ),
]
RoleOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--role",
        "-r",
        help="ROLE or ROLE@ASSET_ID (bind below that asset); repeatable.",
    ),
]


def _fail(exc: Exception | str) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(2)


def _cli_actor() -> Principal:
    from shopfloor.security.principal import Binding, Principal, PrincipalKind
    from shopfloor.security.roles import Role

    return Principal(
        kind=PrincipalKind.ADMIN_KEY,
        name=f"cli:{getpass.getuser()}",
        tenant=None,
        bindings=(Binding(Role.PLATFORM_ADMIN, None),),
    )


@contextmanager
def _open(
    data_dir: Path | None, config: Path | None, tenant: str | None, platform: bool
) -> Iterator[tuple[AuthService, int | None]]:
    """The auth service on the data folder's registry, and the tenant id (None: platform)."""
    from shopfloor.core.config import load_settings
    from shopfloor.core.errors import ShopfloorError
    from shopfloor.registry.service import Registry
    from shopfloor.security.audit import AuditLog
    from shopfloor.security.auth import AuthService

    if platform == (tenant is not None):
        _fail("give either --tenant NAME or --platform")
    try:
        settings = load_settings(config, data_dir=data_dir)
        registry = Registry(settings.resolved_registry_url())
    except ShopfloorError as exc:
        _fail(exc)
    try:
        registry.upgrade()
        tenant_id: int | None = None
        if tenant is not None:
            try:
                tenant_id = registry.get_tenant(tenant).id
            except ShopfloorError:
                names = ", ".join(t.name for t in registry.list_tenants()) or "none yet"
                _fail(f"no tenant {tenant!r} (tenants: {names})")
        try:
            yield AuthService(registry, settings, AuditLog(registry, settings)), tenant_id
        except ShopfloorError as exc:
            _fail(exc)
    finally:
        registry.close()


def _parse_roles(roles: list[str] | None) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    for spec in roles or []:
        name, sep, asset = spec.partition("@")
        if sep and not asset.isdigit():
            _fail(f"--role {spec!r}: write ROLE or ROLE@ASSET_ID (a number)")
        out.append((name, int(asset) if sep else None))
    return out


def _roles_text(u: UserInfo) -> str:
    return (
        ", ".join(
            f"{b.role.value}@{b.asset_id}" if b.asset_id else b.role.value for b in u.bindings
        )
        or "-"
    )


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = typer.prompt("Password", hide_input=True)
    second = typer.prompt("Repeat password", hide_input=True)
    if first != second:
        _fail("the two passwords differ")
    return str(first)


@app.command()
def create(
    username: Username,
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    role: RoleOpt = None,
    display_name: Annotated[str, typer.Option(help="Shown in the UI.")] = "",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin's first line.")
    ] = False,
    must_change: Annotated[
        bool, typer.Option("--must-change", help="The user must change it at first login.")
    ] = False,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Create a user (password prompted twice unless --password-stdin)."""
    password = _read_password(password_stdin)
    with _open(data_dir, config, tenant, platform) as (auth, tenant_id):
        u = auth.create_user(
            tenant_id,
            username,
            password,
            _parse_roles(role),
            display_name=display_name,
            actor=_cli_actor(),
            must_change_password=must_change,
        )
    console.print(f"User [bold]{escape(u.username)}[/bold] created with roles {_roles_text(u)}.")


@app.command("list")
def list_users(
    tenant: TenantOpt = None, platform: PlatformOpt = False, data_dir: DataDir = None
) -> None:
    """List the users of a tenant (or of the platform)."""
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        users = auth.list_users(tenant_id)
    for u in users:
        state = "disabled" if u.disabled else ("locked" if u.locked_until else "active")
        totp = "totp" if u.totp_enrolled else "no-totp"
        print(f"{u.username}\t{_roles_text(u)}\t{state}\t{totp}")


@app.command()
def roles(
    username: Username,
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    role: RoleOpt = None,
    data_dir: DataDir = None,
) -> None:
    """Show a user's roles; with --role, replace them (all given at once) and end the user's
    login sessions (their API tokens keep the permissions they were issued with, at most)."""
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        if role:
            u = auth.set_roles(tenant_id, username, _parse_roles(role), actor=_cli_actor())
            console.print(f"Roles of {escape(username)} replaced; their sessions were ended.")
        else:
            u = auth.get_user(tenant_id, username)
    print(_roles_text(u))


def _set_disabled(
    username: str, tenant: str | None, platform: bool, data_dir: Path | None, disabled: bool
) -> None:
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        auth.update_user(tenant_id, username, disabled=disabled, actor=_cli_actor())
    console.print(f"User {escape(username)} {'disabled' if disabled else 'enabled'}.")


@app.command()
def disable(
    username: Username,
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Disable a user: their sessions and tokens stop working."""
    _set_disabled(username, tenant, platform, data_dir, True)


@app.command()
def enable(
    username: Username,
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Enable a disabled user again."""
    _set_disabled(username, tenant, platform, data_dir, False)


@app.command()
def unlock(
    username: Username,
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Lift the lock after too many failed logins."""
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        auth.unlock(tenant_id, username, actor=_cli_actor())
    console.print(f"User {escape(username)} unlocked.")


@app.command()
def delete(
    username: Username,
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Delete a user with their tokens, sessions and grants."""
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        auth.delete_user(tenant_id, username, actor=_cli_actor())
    console.print(f"User {escape(username)} deleted.")


@app.command("reset-password")
def reset_password(
    username: Username,
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Set a one-time password (printed once); the user must change it at login."""
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        one_time = auth.reset_password(tenant_id, username, actor=_cli_actor())
    console.print(f"One-time password for {escape(username)}, shown once:")
    print(one_time)


@app.command("totp-reset")
def totp_reset(
    username: Username,
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Forget a user's TOTP secret (lost phone): they enrol again at next login."""
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        auth.reset_totp(tenant_id, username, actor=_cli_actor())
    console.print(f"TOTP of {escape(username)} reset.")


@token_app.command("create")
def token_create(
    username: Username,
    name: Annotated[str, typer.Option("--name", "-n", help="What the token is for.")],
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope", "-s", help="A permission the token keeps; repeatable (default: all)."
        ),
    ] = None,
    days: Annotated[int | None, typer.Option(help="Days until it expires (default 90).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API token of a user; the secret is printed once."""
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        user = auth.get_user(tenant_id, username)
        info, secret = auth.issue_token(
            user.id,
            name,
            scope or None,
            None if days is None else days * 86400.0,
            actor=_cli_actor(),
        )
    console.print(f"Token {info.id} for {escape(username)}, expires {info.expires_at}; shown once:")
    print(secret)


@token_app.command("list")
def token_list(
    username: Username,
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    data_dir: DataDir = None,
) -> None:
    """List a user's API tokens (never their secrets)."""
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        tokens = auth.list_tokens(auth.get_user(tenant_id, username).id)
    for t in tokens:
        scopes = ",".join(sorted(t.scopes)) if t.scopes is not None else "all"
        state = "revoked" if t.revoked_at else f"expires {t.expires_at}"
        print(f"{t.id}\t{t.name}\t{scopes}\t{state}")


@token_app.command("revoke")
def token_revoke(
    username: Username,
    token_id: Annotated[int, typer.Argument(help="The token's id (from token list).")],
    tenant: TenantOpt = None,
    platform: PlatformOpt = False,
    data_dir: DataDir = None,
) -> None:
    """Revoke one of a user's API tokens."""
    with _open(data_dir, None, tenant, platform) as (auth, tenant_id):
        auth.revoke_token(auth.get_user(tenant_id, username).id, token_id, actor=_cli_actor())
    console.print(f"Token {token_id} revoked.")
