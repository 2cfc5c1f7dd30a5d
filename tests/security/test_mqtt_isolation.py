"""Every MQTT topic class of the device API, used by a device of tenant A on tenant B's device.

``TOPICS`` is the table: each class of topic a device might publish to or subscribe to (the
JSON API ``sf/v1/{tenant}/{device}/...``, Sparkplug ``spBv1.0/{group}/{type}/{node}[/device]``
and wildcard filters), written once with ``{tenant}/{device}/{group}/{node}`` placeholders.
Filled with B's names, every row is refused, on the real embedded broker (amqtt through the
platform's MQTT service): a PUBLISH is dropped and counted as ``forbidden_topic``, a SUBSCRIBE
gets the failure code 0x80. Filled with A's own names, the rows a device may use are allowed,
so the table is not refusing everything for a wrong reason.

``test_the_table_covers_every_topic_class`` reads the topic kinds from ``registry/topics.py`` and
``ingest/mqtt/device_api.py``: a new kind there without a row here fails it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

from shopfloor.ingest.mqtt import device_api
from shopfloor.registry import topics
from shopfloor.registry.topics import DeviceIdentity, topic_allowed
from tests.ingest.mqtt.conftest import Env, eventually, run
from tests.ingest.mqtt.conftest import env_factory as env_factory  # the fixture, re-exported

SUBACK_FAILURE = 0x80
Action = Literal["publish", "subscribe"]


@dataclass(frozen=True)
class TopicClass:
    kind: str  # the topic kind as registry/topics.py or device_api.py name it
    action: Action
    pattern: str  # {tenant} {device} {group} {node}
    own_allowed: bool  # may a device use it on its own names?


SF = "sf/v1/{tenant}/{device}"
SP = "spBv1.0/{group}"

TOPICS: tuple[TopicClass, ...] = (
    # JSON device API: what a device sends
    TopicClass("telemetry", "publish", f"{SF}/telemetry", True),
    TopicClass("attributes", "publish", f"{SF}/attributes", True),
    TopicClass("commands/+/response", "publish", f"{SF}/commands/c-1/response", True),
    # ... and what only the platform sends: a device posing as the platform
    TopicClass("attributes/desired", "publish", f"{SF}/attributes/desired", False),
    TopicClass("commands/+", "publish", f"{SF}/commands/c-1", False),
    # JSON device API: what a device receives
    TopicClass("attributes/desired", "subscribe", f"{SF}/attributes/desired", True),
    TopicClass("commands/+", "subscribe", f"{SF}/commands/+", True),
    TopicClass("commands/#", "subscribe", f"{SF}/commands/#", True),
    TopicClass("commands/+", "subscribe", f"{SF}/commands/c-1", True),
    # ... and what it must not read: another device's uplink
    TopicClass("telemetry", "subscribe", f"{SF}/telemetry", False),
    TopicClass("attributes", "subscribe", f"{SF}/attributes", False),
    TopicClass("commands/+/response", "subscribe", f"{SF}/commands/+/response", False),
    # Wildcards over tenant, device and everything
    TopicClass("wildcard", "subscribe", "sf/v1/+/{device}/commands/+", False),
    TopicClass("wildcard", "subscribe", "sf/v1/{tenant}/+/commands/+", False),
    TopicClass("wildcard", "subscribe", "sf/v1/{tenant}/#", False),
    TopicClass("wildcard", "subscribe", "sf/v1/#", False),
    TopicClass("wildcard", "subscribe", "#", False),
    TopicClass("wildcard", "subscribe", "spBv1.0/#", False),
    TopicClass("wildcard", "subscribe", f"{SP}/#", False),
    TopicClass("wildcard", "subscribe", "spBv1.0/+/NCMD/+", False),
    # Sparkplug B: an edge node's and its devices' messages
    TopicClass("NBIRTH", "publish", f"{SP}/NBIRTH/{{node}}", True),
    TopicClass("NDEATH", "publish", f"{SP}/NDEATH/{{node}}", True),
    TopicClass("NDATA", "publish", f"{SP}/NDATA/{{node}}", True),
    TopicClass("DBIRTH", "publish", f"{SP}/DBIRTH/{{node}}/dev-1", True),
    TopicClass("DDEATH", "publish", f"{SP}/DDEATH/{{node}}/dev-1", True),
    TopicClass("DDATA", "publish", f"{SP}/DDATA/{{node}}/dev-1", True),
    TopicClass("NCMD", "publish", f"{SP}/NCMD/{{node}}", False),  # the host's to send
    TopicClass("DCMD", "publish", f"{SP}/DCMD/{{node}}/dev-1", False),
    TopicClass("NCMD", "subscribe", f"{SP}/NCMD/{{node}}", True),
    TopicClass("NCMD", "subscribe", f"{SP}/NCMD/{{node}}/#", True),
    TopicClass("DCMD", "subscribe", f"{SP}/DCMD/{{node}}/dev-1", True),
    TopicClass("NDATA", "subscribe", f"{SP}/NDATA/{{node}}", False),
    TopicClass("DDATA", "subscribe", f"{SP}/DDATA/{{node}}/+", False),
)

# Names of the two tenants' devices in the fixtures of tests/ingest/mqtt (make_platform).
A = {"tenant": "acme", "device": "press-01", "group": "acme", "node": "node-a"}
B = {"tenant": "other", "device": "press-01", "group": "other", "node": "node-b"}


def topic(tc: TopicClass, names: dict[str, str]) -> str:
    return tc.pattern.format(**names)


def identity_of_a() -> DeviceIdentity:
    return DeviceIdentity(
        tenant_id=1,
        tenant=A["tenant"],
        device_id=1,
        device=A["device"],
        is_gateway=False,
        owns=frozenset({A["device"]}),
        sparkplug=(A["group"], A["node"]),
        credential_id=1,
    )


def test_the_table_covers_every_topic_class() -> None:
    """The kinds the topic rules and the device API know, each with a row here."""
    join = "/".join
    wanted = {(join(t), "publish") for t in topics._SF_PUBLISH}
    wanted |= {(join(t), "subscribe") for t in topics._SF_SUBSCRIBE}
    # The platform's own subscriptions (sf/v1/+/+/<kind>): what devices publish.
    wanted |= {(s.split("/", 4)[4], "publish") for s in device_api.SUBSCRIPTIONS}
    wanted |= {(k, "publish") for k in topics._NODE_PUBLISH | topics._DEVICE_PUBLISH}
    wanted |= {(k, a) for k in ("NCMD", "DCMD") for a in ("publish", "subscribe")}
    covered = {(tc.kind, tc.action) for tc in TOPICS}
    missing = sorted(wanted - covered)
    assert not missing, (
        f"topic classes {missing} are not in the MQTT isolation table: add rows to TOPICS in "
        "tests/security/test_mqtt_isolation.py"
    )


def test_the_rules_refuse_every_class_across_tenants() -> None:
    me = identity_of_a()
    for tc in TOPICS:
        assert not topic_allowed(me, topic(tc, B), tc.action), f"{tc} allowed on B's device"
        assert topic_allowed(me, topic(tc, A), tc.action) is tc.own_allowed, (
            f"{tc} on A's own device: the row's own_allowed is wrong"
        )


def test_the_broker_refuses_every_class_across_tenants(env_factory: Any) -> None:
    publishes = [tc for tc in TOPICS if tc.action == "publish"]
    subscribes = [tc for tc in TOPICS if tc.action == "subscribe"]

    async def scenario() -> None:
        async with env_factory() as env:
            creds = env.platform.credentials
            creds.set_sparkplug_node(env.acme.id, A["device"], A["group"], A["node"])
            creds.set_sparkplug_node(env.other.id, B["device"], B["group"], B["node"])
            a = env.device(creds.issue_token(env.acme.id, A["device"]))
            b = env.device(creds.issue_token(env.other.id, B["device"]))
            assert await a.connect() == 0
            assert await b.connect() == 0
            # B listens where A's forged messages would land.
            for own in (f"sf/v1/other/{B['device']}/commands/#", "spBv1.0/other/NCMD/node-b"):
                assert await b.subscribe(own) == [1]
            for tc in subscribes:
                granted = await a.subscribe(topic(tc, B))
                assert granted == [SUBACK_FAILURE], f"{tc}: B's topic granted {granted}"
            for tc in publishes:
                await a.publish(topic(tc, B), b'{"temp": 99.0}')
            await _refused(env, len(publishes))
            # A's own telemetry still flows: the refusals above are about B, not a dead device.
            await a.publish(f"sf/v1/acme/{A['device']}/telemetry", b'{"temp": 1.0}')
            assert await env.wait_values(env.acme, A["device"], "temp") == [1.0]
            assert env.platform.registry.list_signals(env.other.id) == []
            got = []
            while not b.messages.empty():
                got.append(b.messages.get()[0])
            # The Sparkplug host's STATE reaches every client: it is the platform's, no tenant's.
            got = [t for t in got if not t.startswith("spBv1.0/STATE/")]
            assert got == [], "a message of A reached B's device"

    run(scenario())


async def _refused(env: Env, n: int) -> None:
    def count() -> int:
        rejected = env.mqtt.stats()["rejected"]
        assert isinstance(rejected, list)
        return sum(
            r["count"]
            for r in rejected
            if r["tenant"] == "acme" and r["reason"] == "forbidden_topic"
        )

    await eventually(lambda: count() >= n, f"{n} forbidden_topic refusals")
    await asyncio.sleep(0.05)
    assert count() == n
