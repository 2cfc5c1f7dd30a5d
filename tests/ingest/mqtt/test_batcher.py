"""Telemetry messages of one event-loop turn share one batch; a bad one fails alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from shopfloor.core.errors import BadInput
from shopfloor.ingest.mqtt.batcher import TelemetryBatcher
from shopfloor.ingest.mqtt.device_api import ShortTelemetry, parse_telemetry
from tests.ingest.mqtt.conftest import make_platform


def test_one_flush_many_devices_and_a_bad_message_fails_alone(tmp_path: Path) -> None:
    platform, acme, other, _ = make_platform(tmp_path, mqtt_mode="off")
    try:

        async def scenario() -> list[BaseException | None]:
            # "mode" becomes a text signal; a number sent to it later must fail alone.
            b = TelemetryBatcher(platform.ingestor)
            await b.ingest(acme, parse_telemetry(b'{"mode": "run"}', "press-02", 10**6))
            items = [
                (acme, parse_telemetry(orjson.dumps({"temp": 20.0 + k}), "press-01", 10**6))
                for k in range(50)
            ]
            items.insert(25, (acme, parse_telemetry(b'{"mode": 3.5}', "press-02", 10**6)))
            items.append((other, parse_telemetry(b'{"temp": 99.5, "on": true}', "press-01", 10**6)))
            flushes = b.flushes
            got = await asyncio.gather(*(b.ingest(t, i) for t, i in items), return_exceptions=True)
            assert b.flushes == flushes + 1  # one turn of the loop, one flush
            return got

        results = asyncio.run(scenario())
        failed = [i for i, r in enumerate(results) if r is not None]
        assert failed == [25]
        assert isinstance(results[25], BadInput)

        def values(tenant_id: int, device: str, signal: str) -> list[object]:
            sig = next(
                s for s in platform.registry.list_signals(tenant_id, device) if s.name == signal
            )
            return (
                platform.historian.query_raw(tenant_id, [sig.id], 0, 2**62)
                .column("value")
                .to_pylist()
            )

        # every good message stored, each at its own (strictly increasing) receive time
        assert values(acme.id, "press-01", "temp") == [20.0 + k for k in range(50)]
        assert values(other.id, "press-01", "temp") == [99.5]
        assert values(other.id, "press-01", "on") == [1.0]
        assert values(acme.id, "press-02", "mode") == [None]  # the text point only
    finally:
        platform.close()


@pytest.mark.parametrize(
    ("payload", "field"),
    [(b'{"a/b": 1}', "signal"), (b'{"t": [1, 2]}', "values.t"), (b'{"t": null}', "payload")],
)
def test_short_form_is_checked_per_message(payload: bytes, field: str) -> None:
    with pytest.raises(BadInput) as err:
        parse_telemetry(payload, "press-01", 10**6)
    assert err.value.field == field


def test_short_form_keeps_names_values_and_drops_nulls() -> None:
    got = parse_telemetry(b'{"temp": 21.5, "gone": null, "state": "run"}', "press-01", 10**6)
    assert isinstance(got, ShortTelemetry)
    assert got.names == ["temp", "state"]
    assert got.values == [21.5, "run"]
