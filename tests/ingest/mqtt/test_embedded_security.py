"""Logins and topic ACLs on the embedded broker, against the registry's device credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.ingest.mqtt.conftest import eventually, free_port, run

SUBACK_FAILURE = 0x80


def test_a_device_uses_only_its_own_topics(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory() as env:
            creds = env.platform.credentials
            dev = env.device(creds.issue_token(env.acme.id, "press-01"))
            assert await dev.connect() == 0
            # as another device, as another tenant: dropped by the broker
            await dev.publish("sf/v1/acme/press-02/telemetry", b'{"temp": 1.0}')
            await dev.publish("sf/v1/other/press-01/telemetry", b'{"temp": 2.0}')
            await dev.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 3.0}')
            assert await env.wait_values(env.acme, "press-01", "temp") == [3.0]
            # The good message came after the forbidden ones and is stored: they were dropped.
            assert env.values(env.acme, "press-02", "temp") == []
            assert env.values(env.other, "press-01", "temp") == []
            # the sender is not told (no negative PUBACK in MQTT 3.1.1); the counters are
            refused = [r for r in env.mqtt.stats()["rejected"] if r["reason"] == "forbidden_topic"]
            assert refused == [
                {"tenant": "acme", "device": "press-01", "reason": "forbidden_topic", "count": 2}
            ]
            assert await dev.subscribe("sf/v1/acme/press-02/commands/+") == [SUBACK_FAILURE]
            assert await dev.subscribe("sf/v1/#") == [SUBACK_FAILURE]
            assert await dev.subscribe("sf/v1/acme/+/commands/+") == [SUBACK_FAILURE]
            assert await dev.subscribe("sf/v1/acme/press-01/commands/+") == [1]

    run(scenario())


def test_a_gateway_acts_for_the_devices_it_owns(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory() as env:
            creds = env.platform.credentials
            env.platform.registry.create_device(env.acme.id, "gw-01")
            creds.set_gateway(env.acme.id, "gw-01", ["press-01"])
            gw = env.device(creds.issue_token(env.acme.id, "gw-01"))
            assert await gw.connect() == 0
            await gw.publish("sf/v1/acme/press-02/telemetry", b'{"temp": 9.0}')
            await gw.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 4.0}')
            assert await env.wait_values(env.acme, "press-01", "temp") == [4.0]
            assert env.values(env.acme, "press-02", "temp") == []

    run(scenario())


def test_token_password_and_certificate_logins(env_factory: Any, tmp_path: Path) -> None:
    tls_port = free_port()

    async def scenario() -> None:
        async with env_factory(mqtt_tls_port=tls_port) as env:
            creds = env.platform.credentials
            assert await env.device("sfd_not-a-token").connect() != 0
            assert await env.device(None).connect() != 0  # anonymous
            creds.set_password(env.acme.id, "press-02", "press-02-login", "correct horse 1")
            assert await env.device("press-02-login", "wrong password").connect() != 0
            pw = env.device("press-02-login", "correct horse 1")
            assert await pw.connect() == 0
            await pw.publish("sf/v1/acme/press-02/telemetry", b'{"temp": 5.0}')
            assert await env.wait_values(env.acme, "press-02", "temp") == [5.0]

            cert_pem, key_pem = creds.issue_certificate(env.acme.id, "press-01")
            cert, key = tmp_path / "dev.pem", tmp_path / "dev.key"
            cert.write_bytes(cert_pem)
            key.write_bytes(key_pem)
            ca = Path(creds.ca_cert_path)
            tls = env.device(None, port=tls_port, tls=(ca, cert, key))
            assert await tls.connect() == 0
            await tls.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 6.0}')
            assert await env.wait_values(env.acme, "press-01", "temp") == [6.0]
            # A certificate from elsewhere (self-made CA) is refused at the handshake.
            from shopfloor.registry.device_ca import DeviceCA

            foreign = DeviceCA(tmp_path / "foreign-ca")
            f_cert, f_key = foreign.issue_device_certificate("acme/press-01")
            (tmp_path / "f.pem").write_bytes(f_cert)
            (tmp_path / "f.key").write_bytes(f_key)
            bad = env.device(None, port=tls_port, tls=(ca, tmp_path / "f.pem", tmp_path / "f.key"))
            assert await bad.connect() != 0

    run(scenario())


def test_revocation_takes_effect_on_the_next_message(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory() as env:
            creds = env.platform.credentials
            dev = env.device(creds.issue_token(env.acme.id, "press-01"))
            witness = env.device(creds.issue_token(env.acme.id, "press-02"))
            assert await dev.connect() == 0
            assert await witness.connect() == 0
            await dev.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 1.0}')
            assert await env.wait_values(env.acme, "press-01", "temp") == [1.0]
            creds.revoke_device(env.acme.id, "press-01")
            if dev.client.is_connected():
                await dev.publish("sf/v1/acme/press-01/telemetry", b'{"temp": 2.0}')
            await witness.publish("sf/v1/acme/press-02/telemetry", b'{"temp": 7.0}')
            assert await env.wait_values(env.acme, "press-02", "temp") == [7.0]
            assert env.values(env.acme, "press-01", "temp") == [1.0]
            await eventually(lambda: dev.disconnected.is_set(), "the revoked client's disconnect")

    run(scenario())


def test_desired_and_reported_attributes(env_factory: Any) -> None:
    async def scenario() -> None:
        async with env_factory() as env:
            creds = env.platform.credentials
            token = creds.issue_token(env.acme.id, "press-01")
            dev = env.device(token)
            assert await dev.connect() == 0
            await dev.publish("sf/v1/acme/press-01/attributes", b'{"firmware": "1.2.3"}')
            await eventually(
                lambda: creds.reported_attributes(env.acme.id, "press-01") == {"firmware": "1.2.3"},
                "reported attributes",
            )
            async with env.http() as http:
                r = await http.put("/api/v1/devices/press-01/attributes/desired", json={"rate": 5})
                assert r.status_code == 200, r.text
            assert creds.desired_attributes(env.acme.id, "press-01") == {"rate": 5}
            # Subscribing after the change still gets it: it was published retained.
            late = env.device(token, client_id="late-subscriber")
            assert await late.connect() == 0
            assert await late.subscribe("sf/v1/acme/press-01/attributes/desired") == [1]
            topic, payload, retained = await late.get()
            while topic.startswith("spBv1.0/STATE/"):  # amqtt also hands out the host's STATE
                topic, payload, retained = await late.get()
            assert topic == "sf/v1/acme/press-01/attributes/desired"
            assert orjson.loads(payload) == {"rate": 5}
            assert retained

    run(scenario())


def test_desired_attributes_survive_a_broker_restart(tmp_path: Path) -> None:
    from tests.ingest.mqtt.conftest import close_env, embedded_env

    async def scenario() -> None:
        env = await embedded_env(tmp_path)
        try:
            creds = env.platform.credentials
            creds.set_desired_attributes(env.acme.id, "press-02", {"mode": "eco"})
            token = creds.issue_token(env.acme.id, "press-02")
        finally:
            await close_env(env)
        # A new platform on the same data: its fresh in-memory broker gets them again.
        from shopfloor.api.platform import Platform

        platform = Platform(env.platform.settings)
        assert platform.mqtt is not None
        await platform.mqtt.start()
        from tests.ingest.mqtt.conftest import Env

        again = Env(platform, env.acme, env.other, env.acme_key, env.port)
        try:
            dev = again.device(token)
            assert await dev.connect() == 0
            assert await dev.subscribe("sf/v1/acme/press-02/attributes/desired") == [1]
            topic, payload, _ = await dev.get()
            while topic.startswith("spBv1.0/STATE/"):
                topic, payload, _ = await dev.get()
            assert orjson.loads(payload) == {"mode": "eco"}
        finally:
            await close_env(again)

    run(scenario())
