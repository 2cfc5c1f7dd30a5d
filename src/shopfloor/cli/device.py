"""``shopfloor device``: credentials and provisioning keys of devices (see docs/devices.md).

Opens only the registry, never the historian, so it works while the platform runs; a
revocation reaches the running brokers within a second. With ``mqtt_dynsec_url`` set (in
``--config`` or SHOPFLOOR_MQTT_DYNSEC_URL), credentials are also pushed into, and revocations
deleted from, an external Mosquitto's dynamic security, as the HTTP API does. The registry and cryptography modules
are imported inside the commands, to keep ``shopfloor --help`` fast.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from shopfloor.core.config import Settings
    from shopfloor.ingest.mqtt.dynsec import DynSec
    from shopfloor.registry.credentials import DeviceCredentials

app = typer.Typer(
    help=(
        "Device credentials (access tokens, passwords, client certificates) and provisioning"
        " keys.\n\nExample: shopfloor device token press-01 --tenant acme -d shopfloor-data"
    ),
    no_args_is_help=True,
)
console = Console(stderr=True)

Tenant = Annotated[str, typer.Option("--tenant", "-t", help="Tenant name.")]
DeviceName = Annotated[str, typer.Argument(help="Registry name of the device.")]
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
        help="Platform settings YAML (for mqtt_dynsec_url: push to an external Mosquitto).",
        exists=True,
        dir_okay=False,
    ),
]


def _fail(exc: Exception) -> NoReturn:
    console.print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(2)


def _settings(data_dir: Path | None, config: Path | None = None) -> Settings:
    from shopfloor.core.config import load_settings
    from shopfloor.core.errors import ShopfloorError

    try:
        return load_settings(config, data_dir=data_dir)
    except ShopfloorError as exc:
        _fail(exc)


def _to_broker(settings: Settings, action: Callable[[DynSec], Awaitable[object]]) -> bool:
    """Run ``action`` against the external Mosquitto's dynamic security, if one is set up.

    Returns False when there is none; raises what the broker (or reaching it) raised.
    """
    if not settings.mqtt_dynsec_url:
        return False
    from shopfloor.ingest.mqtt.dynsec import DynSec
    from shopfloor.ingest.mqtt.service import parse_mqtt_url

    async def run() -> None:
        dynsec = DynSec(parse_mqtt_url(settings.mqtt_dynsec_url or "", "mqtt_dynsec_url"))
        try:
            await dynsec.connect()
            await action(dynsec)
        finally:
            await dynsec.close()

    asyncio.run(run())
    return True


def _push_issued(
    settings: Settings,
    creds: DeviceCredentials,
    tenant_id: int,
    username: str,
    password: str | None,
) -> None:
    """Push a credential just made; if the broker cannot take it, revoke it again (a login the
    broker does not know would only confuse), and fail saying so."""
    identity = creds.authenticate(username, password)
    if identity is None:
        return
    try:
        if _to_broker(settings, lambda d: d.add_device(identity, username, password or username)):
            console.print("Pushed to the external Mosquitto's dynamic security.")
    except Exception as exc:
        creds.revoke(tenant_id, identity.credential_id)
        _fail(
            RuntimeError(
                f"the external Mosquitto did not take the credential ({exc}); it was revoked "
                "again, run the command once the broker answers"
            )
        )


@contextmanager
def _open(
    data_dir: Path | None, tenant: str, settings: Settings | None = None
) -> Iterator[tuple[DeviceCredentials, int]]:
    """The credentials service on the data folder's registry, and the tenant's id."""
    from shopfloor.core.errors import ShopfloorError
    from shopfloor.registry.credentials import DeviceCredentials, default_ca_dir
    from shopfloor.registry.service import Registry

    settings = settings or _settings(data_dir)
    try:
        registry = Registry(settings.resolved_registry_url())
    except ShopfloorError as exc:
        _fail(exc)
    try:
        registry.upgrade()
        try:
            tenant_id = registry.get_tenant(tenant).id
        except ShopfloorError:
            names = ", ".join(t.name for t in registry.list_tenants()) or "none yet"
            _fail(ValueError(f"no tenant {tenant!r} (tenants: {names})"))
        try:
            yield DeviceCredentials(registry, default_ca_dir(settings.data_dir)), tenant_id
        except ShopfloorError as exc:
            _fail(exc)
    finally:
        registry.close()


@app.command()
def token(
    device: DeviceName, tenant: Tenant, data_dir: DataDir = None, config: ConfigFile = None
) -> None:
    """Issue an access token (MQTT username = token, empty password); printed once."""
    settings = _settings(data_dir, config)
    with _open(data_dir, tenant, settings) as (creds, tenant_id):
        secret = creds.issue_token(tenant_id, device)
        _push_issued(settings, creds, tenant_id, secret, None)  # a token logs in as both
    console.print(f"Access token for [bold]{escape(device)}[/bold], shown once:")
    print(secret)


@app.command()
def password(
    device: DeviceName,
    tenant: Tenant,
    username: Annotated[str, typer.Option(help="MQTT username; unique on the platform.")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="SHOPFLOOR_DEVICE_PASSWORD",
            help="At least 8 characters; prompted for when not given.",
        ),
    ],
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Set a username and password (argon2-hashed); the same username again changes it."""
    settings = _settings(data_dir, config)
    with _open(data_dir, tenant, settings) as (creds, tenant_id):
        creds.set_password(tenant_id, device, username, password)
        _push_issued(settings, creds, tenant_id, username, password)
    console.print(f"Password set for [bold]{escape(username)}[/bold] on {escape(device)}.")


@app.command()
def cert(
    device: DeviceName,
    tenant: Tenant,
    out: Annotated[
        Path, typer.Option(help="Folder for <device>.crt, <device>.key and ca.crt.")
    ] = Path("."),
    data_dir: DataDir = None,
) -> None:
    """Issue a TLS client certificate from the device CA; writes the key file 0600."""
    with _open(data_dir, tenant) as (creds, tenant_id):
        cert_pem, key_pem = creds.issue_certificate(tenant_id, device)
        ca_pem = creds.ca_cert_path.read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    key_path = out / f"{device}.key"
    if key_path.exists():
        _fail(FileExistsError(f"{key_path} exists; move it away or choose another --out"))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    (out / f"{device}.crt").write_bytes(cert_pem)
    (out / "ca.crt").write_bytes(ca_pem)
    console.print(
        f"Wrote {out / f'{device}.crt'}, {key_path} (keep it secret) and {out / 'ca.crt'}"
    )


@app.command()
def revoke(
    device: DeviceName,
    tenant: Tenant,
    credential_id: Annotated[
        int | None, typer.Option("--id", help="Revoke only this credential (see list-credentials).")
    ] = None,
    data_dir: DataDir = None,
    config: ConfigFile = None,
) -> None:
    """Revoke a device's credentials (all, or one with --id); effective on the next message."""
    settings = _settings(data_dir, config)
    with _open(data_dir, tenant, settings) as (creds, tenant_id):
        live = {c.id for c in creds.list_credentials(tenant_id, device) if not c.revoked}
        if credential_id is None:
            count = creds.revoke_device(tenant_id, device)
            doomed = live
        else:
            if credential_id not in {c.id for c in creds.list_credentials(tenant_id, device)}:
                _fail(LookupError(f"device {device!r} has no credential {credential_id}"))
            creds.revoke(tenant_id, credential_id)
            count, doomed = 1, {credential_id}
    console.print(f"Revoked {count} credential(s) of {escape(device)}.")
    if doomed:
        try:
            if _to_broker(settings, lambda d: d.revoke_credentials(doomed)):
                console.print("Deleted from the external Mosquitto's dynamic security.")
        except Exception as exc:
            _fail(
                RuntimeError(
                    f"revoked in the registry, but the external Mosquitto did not answer ({exc});"
                    " run the command again to delete the login there"
                )
            )


@app.command("list-credentials")
def list_credentials(device: DeviceName, tenant: Tenant, data_dir: DataDir = None) -> None:
    """List a device's credentials (never their secrets), revoked ones included."""
    with _open(data_dir, tenant) as (creds, tenant_id):
        rows = creds.list_credentials(tenant_id, device)
    for c in rows:
        what = c.username or (c.fingerprint and f"sha256:{c.fingerprint}") or ""
        state = f"revoked {c.revoked_at:%Y-%m-%d %H:%M}" if c.revoked_at else "live"
        print(f"{c.id}\t{c.kind}\t{what}\t{state}")


@app.command("provisioning-key")
def provisioning_key(
    name: Annotated[str, typer.Argument(help="A name for the key, e.g. the line it is for.")],
    tenant: Tenant,
    device_type: Annotated[
        str | None, typer.Option(help="Devices register with this device type.")
    ] = None,
    asset_id: Annotated[int | None, typer.Option(help="Devices register under this asset.")] = None,
    gateway: Annotated[bool, typer.Option(help="Devices register as gateways.")] = False,
    expires_in_days: Annotated[
        float | None, typer.Option(help="The key stops working after this many days.")
    ] = None,
    max_devices: Annotated[
        int | None, typer.Option(help="The key registers at most this many devices.")
    ] = None,
    reprovision: Annotated[
        bool, typer.Option(help="Let the key take over an existing device of the same name.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Create a provisioning key for zero-touch registration (POST /api/v1/provision)."""
    expires = None
    if expires_in_days is not None:
        expires = datetime.now(UTC) + timedelta(days=expires_in_days)
    with _open(data_dir, tenant) as (creds, tenant_id):
        key = creds.create_provisioning_key(
            tenant_id,
            name,
            device_type=device_type,
            asset_id=asset_id,
            gateway=gateway,
            expires_at=expires,
            max_devices=max_devices,
            reprovision=reprovision,
        )
    console.print(f"Provisioning key [bold]{escape(name)}[/bold], shown once:")
    print(key)
