"""The external-broker mode against a real Mosquitto: QoS 1 acknowledged only when durable,
and device credentials and ACLs pushed through Mosquitto's dynamic-security plugin."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pyarrow as pa

from shopfloor.core.errors import StorageError
from shopfloor.ingest.mqtt.acl import device_acls
from shopfloor.registry.credentials import topic_allowed
from tests.ingest.mqtt.conftest import (
    Env,
    Mosquitto,
    close_env,
    eventually,
    make_platform,
    run,
)

SUBACK_FAILURE = 0x80


async def external_env(tmp_path: Path, broker: Mosquitto, **settings: Any) -> Env:
    platform, acme, other, key = make_platform(tmp_path, mqtt_mode="external", **settings)
    assert platform.mqtt is not None
    await platform.mqtt.start()
    return Env(platform, acme, other, key, broker.port)


def test_a_message_whose_ingest_failed_is_redelivered(tmp_path: Path, mosquitto: Mosquitto) -> None:
    async def scenario() -> None:
        env = await external_env(tmp_path, mosquitto, mqtt_url=f"mqtt://127.0.0.1:{mosquitto.port}")
        try:
            historian = env.platform.historian
            real_write = historian.write_async
            calls: list[int] = []

            async def failing_once(batch: pa.Table) -> None:
                calls.append(batch.num_rows)
                if len(calls) == 1:
                    raise StorageError("disk unavailable (injected)")
                await real_write(batch)

            historian.write_async = failing_once  # type: ignore[method-assign]
            dev = env.device(None, client_id="press-01-client")
            assert await dev.connect() == 0
            await dev.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 21.5}', qos=1)
            # First delivery fails and is not acknowledged; after the subscriber reconnects,
            # Mosquitto delivers it again and it is stored, once.
            assert await env.wait_values(env.acme, "press-01", "temp") == [21.5]
            assert len(calls) == 2
            assert env.mqtt.stats()["unstored_messages"] == 1
            await asyncio.sleep(0.3)
            assert env.values(env.acme, "press-01", "temp") == [21.5]
        finally:
            await close_env(env)

    run(scenario())


def test_dynsec_acls_on_mosquitto(tmp_path: Path, dynsec_mosquitto: Mosquitto) -> None:
    broker = dynsec_mosquitto

    async def scenario() -> None:
        env = await external_env(
            tmp_path,
            broker,
            mqtt_url=f"mqtt://platform:platform-secret-1@127.0.0.1:{broker.port}",
            mqtt_dynsec_url=f"mqtt://admin:admin-secret-1@127.0.0.1:{broker.port}",
        )
        try:
            svc = env.mqtt
            creds = env.platform.credentials
            token = creds.issue_token(env.acme.id, "press-01")
            identity = creds.authenticate(token, "")
            await svc.credential_issued(identity, token, token)
            # wrong and missing logins are refused by Mosquitto
            assert await env.device("press-01", "nope").connect() != 0
            dev = env.device(token, token)
            assert await dev.connect() == 0
            await dev.publish("sf/v1/acme/press-02/telemetry", b'{"temp": 1.0}')
            await dev.publish("sf/v1/other/press-01/telemetry", b'{"temp": 2.0}')
            await dev.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 3.0}')
            assert await env.wait_values(env.acme, "press-01", "temp") == [3.0]
            assert env.values(env.acme, "press-02", "temp") == []
            assert env.values(env.other, "press-01", "temp") == []
            assert await dev.subscribe("sf/v1/acme/press-02/commands/+") == [SUBACK_FAILURE]
            assert await dev.subscribe("sf/v1/#") == [SUBACK_FAILURE]
            assert await dev.subscribe("sf/v1/acme/press-01/commands/+") == [1]
            # revocation disconnects the client and refuses the next login
            creds.revoke_device(env.acme.id, "press-01")
            await svc.credential_revoked(token)
            await eventually(lambda: dev.disconnected.is_set(), "Mosquitto dropping the client")
            assert await env.device(token, token).connect() != 0
        finally:
            await close_env(env)

    run(scenario(), timeout=90)


def test_pushed_acls_say_what_topic_allowed_says(tmp_path: Path) -> None:
    platform, acme, _, _ = make_platform(tmp_path, mqtt_mode="off")
    try:
        creds = platform.credentials
        platform.registry.create_device(acme.id, "gw-01")
        creds.set_gateway(acme.id, "gw-01", ["press-01"])
        creds.set_sparkplug_node(acme.id, "gw-01", "acme", "line-1")
        identity = creds.authenticate(creds.issue_token(acme.id, "gw-01"), "")
        publish, subscribe = device_acls(identity)
        assert "sf/v1/acme/press-01/telemetry" in publish
        assert "sf/v1/acme/press-02/telemetry" not in publish
        for pattern in publish:  # a concrete topic for each pattern
            assert topic_allowed(identity, pattern.replace("+", "x1"), "publish"), pattern
        for pattern in subscribe:
            assert topic_allowed(identity, pattern, "subscribe"), pattern
    finally:
        platform.close()


def test_credentials_from_the_api_reach_mosquitto(
    tmp_path: Path, dynsec_mosquitto: Mosquitto
) -> None:
    """A token issued and revoked through the HTTP API is pushed into and deleted from an
    external Mosquitto, which then decides the device's logins and topics itself."""
    broker = dynsec_mosquitto

    async def scenario() -> None:
        env = await external_env(
            tmp_path,
            broker,
            mqtt_url=f"mqtt://platform:platform-secret-1@127.0.0.1:{broker.port}",
            mqtt_dynsec_url=f"mqtt://admin:admin-secret-1@127.0.0.1:{broker.port}",
        )
        try:
            async with env.http() as http:
                r = await http.post("/api/v1/devices/press-01/credentials", json={"kind": "token"})
                assert r.status_code == 201, r.text
                token, cid = r.json()["token"], r.json()["credential"]["id"]
                r = await http.post(
                    "/api/v1/devices/press-02/credentials",
                    json={"kind": "password", "username": "press-02", "password": "pw-press-02"},
                )
                assert r.status_code == 201, r.text
                dev = env.device(token, token)
                assert await dev.connect() == 0
                await dev.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 4.5}')
                assert await env.wait_values(env.acme, "press-01", "temp") == [4.5]
                other = env.device("press-02", "pw-press-02")
                assert await other.connect() == 0
                # Mosquitto applies the pushed ACLs: press-02 cannot write as press-01
                await other.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 9.5}')
                await other.publish("sf/v1/acme/press-02/telemetry", b'{"temp": 5.5}')
                assert await env.wait_values(env.acme, "press-02", "temp") == [5.5]
                assert env.values(env.acme, "press-01", "temp") == [4.5]
                r = await http.delete(f"/api/v1/devices/press-01/credentials/{cid}")
                assert r.status_code == 204
                await eventually(lambda: dev.disconnected.is_set(), "Mosquitto dropping press-01")
                assert await env.device(token, token).connect() != 0
                r = await http.delete("/api/v1/devices/press-02/credentials")
                assert r.json()["revoked"] == 1
                await eventually(lambda: other.disconnected.is_set(), "Mosquitto dropping press-02")
        finally:
            await close_env(env)

    run(scenario(), timeout=90)


def test_device_cli_pushes_to_and_deletes_from_mosquitto(
    tmp_path: Path, dynsec_mosquitto: Mosquitto
) -> None:
    """`shopfloor device token|password|revoke` with mqtt_dynsec_url in --config reach an
    external Mosquitto as the HTTP API does: Mosquitto takes the new logins, and drops them on
    revocation."""
    from typer.testing import CliRunner

    from shopfloor.cli.main import app

    broker = dynsec_mosquitto
    config = tmp_path / "shopfloor.yaml"
    data = tmp_path / "data"
    config.write_text(
        f"data_dir: {data}\nmqtt_mode: external\n"
        f"mqtt_url: mqtt://platform:platform-secret-1@127.0.0.1:{broker.port}\n"
        f"mqtt_dynsec_url: mqtt://admin:admin-secret-1@127.0.0.1:{broker.port}\n"
    )
    cli = CliRunner()

    def shopfloor(*args: str) -> str:
        result = cli.invoke(app, ["device", *args, "--tenant", "acme", "--config", str(config)])
        assert result.exit_code == 0, result.output
        return result.output

    async def scenario() -> None:
        env = await external_env(
            tmp_path,
            broker,
            mqtt_url=f"mqtt://platform:platform-secret-1@127.0.0.1:{broker.port}",
            mqtt_dynsec_url=f"mqtt://admin:admin-secret-1@127.0.0.1:{broker.port}",
        )
        try:
            out = await asyncio.to_thread(shopfloor, "token", "press-01")
            assert "Pushed to the external Mosquitto" in out
            token = out.strip().splitlines()[-1]
            await asyncio.to_thread(
                shopfloor, "password", "press-02", "--username", "p2", "--password", "pw-press-2"
            )
            dev = env.device(token, token)
            assert await dev.connect() == 0
            await dev.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 1.5}')
            assert await env.wait_values(env.acme, "press-01", "temp") == [1.5]
            other = env.device("p2", "pw-press-2")
            assert await other.connect() == 0
            out = await asyncio.to_thread(shopfloor, "revoke", "press-01")
            assert "Deleted from the external Mosquitto" in out
            await eventually(lambda: dev.disconnected.is_set(), "Mosquitto dropping press-01")
            assert await env.device(token, token).connect() != 0
            assert not other.disconnected.is_set()  # press-02's login is untouched
        finally:
            await close_env(env)

    run(scenario(), timeout=120)


def test_device_cli_revokes_what_mosquitto_refused(tmp_path: Path) -> None:
    """When the external broker cannot be reached, the CLI revokes the token it just made (a
    login the broker lacks would only confuse) and fails naming the broker."""
    from typer.testing import CliRunner

    from shopfloor.cli.main import app
    from tests.services import free_port

    platform, acme, _, _ = make_platform(tmp_path, mqtt_mode="off")
    platform.close()
    config = tmp_path / "shopfloor.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nmqtt_mode: external\n"
        f"mqtt_dynsec_url: mqtt://admin:x@127.0.0.1:{free_port()}\n"
    )
    result = CliRunner().invoke(
        app, ["device", "token", "press-01", "--tenant", "acme", "--config", str(config)]
    )
    assert result.exit_code == 2
    assert "external Mosquitto did not take the credential" in result.output
    from shopfloor.registry.credentials import DeviceCredentials, default_ca_dir
    from shopfloor.registry.service import Registry

    reg = Registry(f"sqlite:///{tmp_path / 'data' / 'registry.db'}")
    try:
        creds = DeviceCredentials(reg, default_ca_dir(tmp_path / "data"))
        listed = creds.list_credentials(acme.id, "press-01")
        assert len(listed) == 1
        assert listed[0].revoked
    finally:
        reg.close()
