"""Process roles: what each one opens and runs, and the settings each one refuses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shopfloor.cli.main import app
from shopfloor.core.config import Settings
from shopfloor.core.errors import BadInput
from tests.historian import postgres_service
from tests.services import MOSQUITTO, Mosquitto, require

PG = "postgresql://db.example/shopfloor"
REG = "postgresql+psycopg://db.example/shopfloor"


@pytest.mark.parametrize(
    ("settings", "named", "says"),
    [
        ({"role": "api"}, "historian_url", "DuckDB historian is opened by one process"),
        ({"role": "rules", "historian_url": "duckdb:///x"}, "historian_url", "duckdb:///x"),
        ({"role": "ingest", "historian_url": PG}, "registry_url", "sqlite"),
        (
            {"role": "ingest", "historian_url": PG, "registry_url": REG},
            "mqtt_mode",
            "embedded broker cannot be shared",
        ),
        (
            {"role": "ingest", "historian_url": PG, "registry_url": REG, "mqtt_mode": "off"},
            "mqtt_mode",
            "'off'",
        ),
        (
            {"role": "rules", "historian_url": PG, "registry_url": REG},
            "mqtt_mode",
            "durable batches from the ingest workers over the broker",
        ),
        (
            {
                "role": "rules",
                "historian_url": PG,
                "registry_url": REG,
                "mqtt_mode": "external",
                "mqtt_url": "mqtt://127.0.0.1:1",
                "rules_partition": "2/2",
            },
            "rules_partition",
            "need 0 <= index < count",
        ),
    ],
)
def test_a_role_the_storage_cannot_serve_is_refused_naming_the_setting(
    tmp_path: Path, settings: dict[str, str], named: str, says: str
) -> None:
    from shopfloor.api.platform import Platform, check_role

    s = Settings(data_dir=tmp_path, **settings)
    with pytest.raises(BadInput) as err:
        check_role(s)
    assert err.value.field == named
    assert says in str(err.value), str(err.value)
    with pytest.raises(BadInput):
        Platform(s)  # the platform checks it too, before opening anything
    assert not (tmp_path / "registry.db").exists()


def test_all_is_the_default_and_needs_nothing(tmp_path: Path) -> None:
    from shopfloor.api.platform import check_role

    s = Settings(data_dir=tmp_path)
    assert s.role == "all"
    check_role(s)
    from shopfloor.core.config import load_settings

    with pytest.raises(BadInput, match="role"):
        load_settings(None, role="worker")


def test_serve_refuses_an_unknown_role_and_names_historian_url(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["serve", "--role", "worker", "-d", str(tmp_path)])
    assert r.exit_code == 2
    assert "--role must be one of all, api, ingest, rules" in r.output
    r = runner.invoke(app, ["serve", "--role", "api", "-d", str(tmp_path)])
    assert r.exit_code == 2
    assert "historian_url" in r.output, r.output


def test_each_role_opens_and_runs_only_its_part(tmp_path: Path) -> None:
    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    require("Mosquitto", MOSQUITTO.exists())
    from shopfloor.api.platform import Platform

    db = postgres_service.shared_cluster().new_database("roles")
    (tmp_path / "mosq").mkdir()
    broker = Mosquitto(tmp_path / "mosq")
    broker.start()
    base = {
        "historian_url": db,
        "registry_url": db.replace("postgresql://", "postgresql+psycopg://", 1),
        "mqtt_mode": "external",
        "mqtt_url": f"mqtt://127.0.0.1:{broker.port}",
    }

    async def run(role: str) -> dict[str, object]:
        p = Platform(Settings(data_dir=tmp_path / role, role=role, **base))
        try:
            p.start_background()
            if role == "ingest":
                assert p.mqtt is not None
                await asyncio.wait_for(p.mqtt.started.wait(), 10)
            await asyncio.sleep(0.2)  # every task had its first turn
            names = sorted(t.get_coro().__qualname__ for t in p._tasks)  # type: ignore[union-attr]
            return {
                "tasks": names,
                # Where this process's durable batches go: the rules here, or the broker.
                "durable": getattr(p.ingestor.on_durable, "__qualname__", None),
                "bus_batches": p.bus is not None and p.bus.on_batch is not None,
                "bus_alarms": p.bus is not None and p.bus.on_alarms is not None,
                "subscribed": p.mqtt is not None and p.mqtt.subscriber is not None,
                "listens": p.historian._listen_thread is not None,  # type: ignore[attr-defined]
                "client_id": p.mqtt.client_id() if p.mqtt is not None else None,
            }
        finally:
            await p.stop_background()
            p.close()

    try:
        ingest = asyncio.run(run("ingest"))
        api = asyncio.run(run("api"))
        rules = asyncio.run(run("rules"))
        again = asyncio.run(run("ingest"))
    finally:
        broker.stop()
    assert ingest["subscribed"]
    assert ingest["durable"] == "ProcessBus.publish_batch"  # to the rules processes
    assert not ingest["bus_batches"]
    assert not ingest["bus_alarms"]
    assert not ingest["listens"]
    assert ingest["tasks"] == ["MqttService.run", "Platform._run_bus"]
    assert not api["subscribed"]
    assert api["durable"] == "ProcessBus.publish_batch"  # its HTTP ingest, to the rules
    assert api["bus_alarms"]  # alarm changes for its WebSockets
    assert api["listens"]
    # MqttService.run: the link that pushes credentials (dynsec)
    assert api["tasks"] == ["MqttService.run", "Platform._run_bus"]
    assert not rules["subscribed"]
    assert rules["durable"] == "Platform._durable"
    assert rules["bus_batches"]
    assert not rules["bus_alarms"]
    assert rules["listens"]
    assert "Platform._retention_loop" in rules["tasks"]  # type: ignore[operator]
    assert "RulesRuntime.run" in rules["tasks"]  # type: ignore[operator]
    # A restarted worker comes back under the same MQTT session (its data folder keeps it).
    assert again["client_id"] == ingest["client_id"]
    assert str(ingest["client_id"]).startswith("shopfloor-shopfloor-")


def _login(port: int, username: str) -> int:
    """A device's MQTT login at the broker: the CONNACK reason code (0: accepted)."""
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got: list[int] = []
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"login-{username[:8]}")
    client.username_pw_set(username, username)

    def on_connect(_c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        got.append(int(getattr(rc, "value", rc)))  # type: ignore[call-overload]
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert done.wait(10), "no CONNACK"
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0]


def test_an_api_process_pushes_credentials_and_revocations_into_mosquitto(tmp_path: Path) -> None:
    """The api role runs no subscriber, but a device credential issued or revoked there must
    reach the broker: with an external Mosquitto the broker, not the ingest workers, checks
    every login and topic, so a revoked device is refused whichever worker it would reach."""
    missing = postgres_service.missing()
    require(missing or "PostgreSQL", missing is None)
    from tests.services import DYNSEC

    require("Mosquitto with dynamic security", MOSQUITTO.exists() and DYNSEC.exists())
    from shopfloor.api.platform import Platform

    db = postgres_service.shared_cluster().new_database("roles")
    (tmp_path / "mosq").mkdir()
    broker = Mosquitto(tmp_path / "mosq", ("admin", "admin-secret-1"))
    broker.start()

    async def scenario() -> tuple[int, int]:
        p = Platform(
            Settings(
                data_dir=tmp_path / "api",
                role="api",
                historian_url=db,
                registry_url=db.replace("postgresql://", "postgresql+psycopg://", 1),
                mqtt_mode="external",
                mqtt_url=f"mqtt://platform:platform-secret-1@127.0.0.1:{broker.port}",
                mqtt_dynsec_url=f"mqtt://admin:admin-secret-1@127.0.0.1:{broker.port}",
            )
        )
        try:
            assert p.mqtt is not None
            await p.mqtt.start()
            assert p.mqtt.syncs_broker
            assert p.mqtt.subscriber is None
            tenant, _ = p.registry.create_tenant("acme")
            p.registry.create_device(tenant.id, "press-01")
            token = p.credentials.issue_token(tenant.id, "press-01")
            identity = p.credentials.authenticate(token, "")
            await p.mqtt.credential_issued(identity, token, token)
            accepted = await asyncio.to_thread(_login, broker.port, token)
            p.credentials.revoke_device(tenant.id, "press-01")
            await p.mqtt.credential_revoked(token)
            refused = await asyncio.to_thread(_login, broker.port, token)
            return accepted, refused
        finally:
            assert p.mqtt is not None
            await p.mqtt.stop()
            p.close()

    try:
        accepted, refused = asyncio.run(scenario())
    finally:
        broker.stop()
    assert accepted == 0
    assert refused != 0
