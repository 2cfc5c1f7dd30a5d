"""The hash-chained audit log: tamper detection (edit, insert, delete, reorder, truncate) and
retention purges that keep the chain verifiable. Damage is done in SQL, as an intruder would."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import text

from shopfloor.api.platform import Platform
from shopfloor.core.errors import BadInput
from shopfloor.core.timeutil import DAY_NS, now_ns
from shopfloor.registry import TenantInfo
from shopfloor.security.audit import (
    GENESIS,
    AuditFilter,
    AuditLog,
    canonical_json,
    record_hash,
    verify_export,
)
from shopfloor.security.principal import Binding, Principal, PrincipalKind
from shopfloor.security.roles import Role

COLUMNS = "ts_ns, actor, role, tenant_id, action, object, outcome, source, details, prev_hash, hash"


def fill(audit: AuditLog, n: int = 10) -> None:
    for i in range(n):
        audit.record(f"test.action{i}", f"item={i}", "denied" if i % 3 else "ok", actor=f"user{i}")


def sql(platform: Platform, statement: str, **params: object) -> None:
    with platform.registry.engine.begin() as conn:
        conn.execute(text(statement), params)


def row(platform: Platform, seq: int) -> dict[str, object]:
    with platform.registry.engine.connect() as conn:
        got = conn.execute(text("SELECT * FROM audit_records WHERE seq = :s"), {"s": seq})
        return dict(got.mappings().one())


def test_intact_chain_verifies_and_links_every_record(platform: Platform) -> None:
    fill(platform.audit, 10)
    result = platform.audit.verify()
    assert (result.ok, result.checked, result.first_seq, result.last_seq) == (True, 10, 1, 10)
    first, second = row(platform, 1), row(platform, 2)
    assert first["prev_hash"] == GENESIS
    assert second["prev_hash"] == first["hash"]
    # The documented rule, recomputed independently: sha256(prev_hash || canonical JSON).
    fields = {k: first[k] for k in ("seq", "ts_ns", "actor", "role", "tenant_id", "action")}
    fields |= {k: first[k] for k in ("object", "outcome", "source")}
    fields["details"] = json.loads(str(first["details"]))
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert first["hash"] == hashlib.sha256((GENESIS + body).encode()).hexdigest()


def test_empty_log_is_intact(platform: Platform) -> None:
    assert platform.audit.verify().ok


def test_edited_field_is_found_at_its_seq(platform: Platform) -> None:
    fill(platform.audit)
    sql(platform, "UPDATE audit_records SET outcome = 'ok' WHERE seq = 5")  # was 'denied'
    result = platform.audit.verify()
    assert not result.ok
    assert (result.bad_seq, result.kind) == (5, "hash-mismatch")
    assert "record 5" in result.message


def test_edited_details_are_found(platform: Platform) -> None:
    fill(platform.audit)
    sql(platform, "UPDATE audit_records SET details = :d WHERE seq = 7", d='{"x":1}')
    assert (platform.audit.verify().bad_seq, platform.audit.verify().kind) == (7, "hash-mismatch")


def test_inserted_forged_record_breaks_the_chain(platform: Platform) -> None:
    fill(platform.audit)
    # Make room after record 3 and insert a forgery whose own hash is computed correctly.
    for seq in range(10, 3, -1):
        sql(platform, "UPDATE audit_records SET seq = :n WHERE seq = :o", n=seq + 1, o=seq)
    prev = row(platform, 3)
    forged = {
        "seq": 4,
        "ts_ns": int(str(prev["ts_ns"])) + 1,
        "actor": "intruder",
        "role": "-",
        "tenant_id": None,
        "action": "test.forged",
        "object": "-",
        "outcome": "ok",
        "source": "-",
        "details": {},
    }
    digest = record_hash(str(prev["hash"]), forged)
    sql(
        platform,
        f"INSERT INTO audit_records (seq, {COLUMNS}) VALUES (4, :ts_ns, :actor, :role, NULL,"
        " :action, :object, :outcome, :source, '{}', :prev, :hash)",
        **{k: v for k, v in forged.items() if k not in ("seq", "details", "tenant_id")},
        prev=prev["hash"],
        hash=digest,
    )
    result = platform.audit.verify()
    assert not result.ok
    assert result.bad_seq == 5  # the first genuine record after the forgery no longer links
    assert result.kind == "chain-break"


def test_forged_row_in_a_free_seq_at_the_end_is_found(platform: Platform) -> None:
    fill(platform.audit, 4)
    sql(
        platform,
        f"INSERT INTO audit_records (seq, {COLUMNS}) VALUES (5, 1, 'x', '-', NULL, 'a', '-',"
        " 'ok', '-', '{}', :prev, :hash)",
        prev="f" * 64,
        hash="e" * 64,
    )
    result = platform.audit.verify()
    assert (result.ok, result.bad_seq, result.kind) == (False, 5, "chain-break")


def test_deleted_middle_record_is_a_gap(platform: Platform) -> None:
    fill(platform.audit)
    sql(platform, "DELETE FROM audit_records WHERE seq = 6")
    result = platform.audit.verify()
    assert (result.ok, result.bad_seq, result.kind) == (False, 7, "seq-gap")
    assert "6..6" in result.message


def test_deleted_middle_record_with_renumbering_breaks_the_chain(platform: Platform) -> None:
    fill(platform.audit)
    sql(platform, "DELETE FROM audit_records WHERE seq = 6")
    for seq in range(7, 11):
        sql(platform, "UPDATE audit_records SET seq = :n WHERE seq = :o", n=seq - 1, o=seq)
    result = platform.audit.verify()
    assert (result.ok, result.bad_seq, result.kind) == (False, 6, "chain-break")


@pytest.mark.parametrize("removed", [1, 3])
def test_deleting_the_newest_records_is_found_by_the_head_witness(
    platform: Platform, removed: int
) -> None:
    fill(platform.audit)
    sql(platform, "DELETE FROM audit_records WHERE seq > :n", n=10 - removed)
    result = platform.audit.verify()
    assert not result.ok
    assert result.kind == "truncated"
    assert result.bad_seq == 10 - removed + 1
    assert "record 10" in result.message


def test_deleting_everything_is_found(platform: Platform) -> None:
    fill(platform.audit, 3)
    sql(platform, "DELETE FROM audit_records")
    assert platform.audit.verify().kind == "truncated"


def test_missing_witness_is_damage(platform: Platform) -> None:
    fill(platform.audit, 3)
    platform.audit.head_path.unlink()
    result = platform.audit.verify()
    assert (result.ok, result.kind) == (False, "witness-missing")


def test_replaced_newest_record_differs_from_the_witness(platform: Platform) -> None:
    fill(platform.audit, 3)
    # Rewrite record 3 so that it verifies on its own (correct prev link and hash).
    prev = row(platform, 2)
    fields = {k: v for k, v in row(platform, 3).items() if k not in ("prev_hash", "hash")}
    fields["outcome"] = "ok" if fields["outcome"] != "ok" else "denied"
    fields["details"] = json.loads(str(fields["details"]))
    digest = record_hash(str(prev["hash"]), fields)
    sql(
        platform,
        "UPDATE audit_records SET outcome = :o, hash = :h WHERE seq = 3",
        o=fields["outcome"],
        h=digest,
    )
    result = platform.audit.verify()
    assert (result.ok, result.bad_seq, result.kind) == (False, 3, "witness-mismatch")


def test_swapped_records_are_found(platform: Platform) -> None:
    fill(platform.audit)
    a, b = row(platform, 3), row(platform, 6)
    cols = [c.strip() for c in COLUMNS.split(",")]
    for target, src in ((3, b), (6, a)):
        sets = ", ".join(f"{c} = :{c}" for c in cols)
        sql(
            platform,
            f"UPDATE audit_records SET {sets} WHERE seq = :seq",
            seq=target,
            **{c: src[c] for c in cols},
        )
    result = platform.audit.verify()
    assert not result.ok
    assert result.bad_seq == 3
    assert result.kind in ("chain-break", "hash-mismatch")


def test_table_ahead_of_witness_is_reported_but_intact(platform: Platform) -> None:
    # A crash between the commit and the witness write leaves the witness one behind.
    fill(platform.audit, 3)
    witness = platform.audit.head_path.read_text()
    platform.audit.record("test.after", "-", "ok")
    platform.audit.head_path.write_text(witness)
    result = platform.audit.verify()
    assert result.ok
    assert result.unwitnessed == 1
    assert "after the head witness" in result.message


def test_principal_fields_and_secret_redaction(platform: Platform) -> None:
    tenant = TenantInfo(
        id=7, name="acme", auto_register_signals=True, retention_days=None, created_at=None
    )  # type: ignore[arg-type]
    who = Principal(
        PrincipalKind.USER,
        "alice",
        tenant,
        (Binding(Role.ENGINEER, 7), Binding(Role.OPERATOR, 7)),
        user_id=42,
    )
    seq = platform.audit.record(
        "user.password.changed",
        "user=alice",
        "ok",
        principal=who,
        source="10.0.0.9",
        details={"password": "hunter2", "nested": {"api_key": "k"}, "new_token": "t", "n": 1},
    )
    got = platform.audit.records(AuditFilter(all_tenants=True), 10)[-1]
    assert got.seq == seq
    assert (got.actor, got.role, got.tenant_id, got.source) == (
        "alice",
        "engineer,operator",
        7,
        "10.0.0.9",
    )
    assert got.details == {
        "user_id": 42,
        "password": "[redacted]",
        "nested": {"api_key": "[redacted]"},
        "new_token": "[redacted]",
        "n": 1,
    }
    assert "hunter2" not in str(row(platform, seq))
    with pytest.raises(BadInput) as err:
        platform.audit.record("x", "-", "maybe")
    assert err.value.field == "outcome"


def test_filters(platform: Platform) -> None:
    audit = platform.audit
    audit.record("device.command", "name=p1", "ok", actor="bob", tenant_id=1)
    audit.record("device.delete", "name=p2", "denied", actor="eve", tenant_id=2)
    audit.record("tenant.create", "name=t", "ok", actor="root")
    everything = AuditFilter(all_tenants=True)
    assert [e.actor for e in audit.records(everything)] == ["bob", "eve", "root"]
    assert [e.actor for e in audit.records(AuditFilter(tenant_id=1))] == ["bob"]
    assert [e.actor for e in audit.records(AuditFilter())] == ["root"]  # platform-level only
    assert [e.actor for e in audit.records(AuditFilter(all_tenants=True, action="device.*"))] == [
        "bob",
        "eve",
    ]
    assert [e.actor for e in audit.records(AuditFilter(all_tenants=True, outcome="denied"))] == [
        "eve"
    ]
    assert [e.actor for e in audit.records(AuditFilter(all_tenants=True, after_seq=2))] == ["root"]
    assert len(list(audit.iter_records(everything, page=1))) == 3


# -- retention ---------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = now_ns()

    def __call__(self) -> int:
        return self.now


def aged(platform: Platform, clock: Clock, *days_ago: int) -> None:
    """One record written ``days`` ago for each value, oldest first."""
    real = clock.now
    for days in days_ago:
        clock.now = real - days * DAY_NS
        platform.audit.record("test.aged", f"days={days}", "ok")
    clock.now = real


def test_retention_change_takes_effect_and_chain_stays_verifiable(platform: Platform) -> None:
    clock = Clock()
    platform.audit.clock = clock
    aged(platform, clock, 400, 399, 250, 100, 1)
    assert platform.audit.retention_days() == 180  # the settings' initial value

    platform.audit.set_retention(365)
    result = platform.audit.purge(actor="test")
    assert (result.removed, result.up_to_seq) == (2, 2)
    left = [e.object for e in platform.audit.records(AuditFilter(all_tenants=True))]
    assert left[:3] == ["days=250", "days=100", "days=1"]
    assert platform.audit.verify().ok

    platform.audit.set_retention(200)
    result = platform.audit.purge(actor="test")
    assert result.removed == 1
    entries = platform.audit.records(AuditFilter(all_tenants=True))
    objects = [e.object for e in entries]
    assert "days=250" not in objects
    assert {"days=100", "days=1"} <= set(objects)
    assert platform.audit.verify().ok
    purged = [e for e in entries if e.action == "audit.purged"][-1]
    assert purged.details["removed"] == 1
    assert purged.details["retention_days"] == 200
    assert purged.actor == "test"
    # Nothing older than the retention left: a second purge removes nothing, writes nothing.
    count = platform.audit.count()
    assert platform.audit.purge().removed == 0
    assert platform.audit.count() == count


def test_retention_changes_are_audited_and_bounded(platform: Platform) -> None:
    old = platform.audit.set_retention(400)
    assert (old, platform.audit.retention_days()) == (180, 400)
    last = platform.audit.records(AuditFilter(all_tenants=True))[-1]
    assert last.action == "audit.settings.changed"
    assert last.details == {"old_retention_days": 180, "new_retention_days": 400}
    for bad in (179, 0, -5):
        with pytest.raises(BadInput) as err:
            platform.audit.set_retention(bad)
        assert err.value.field == "retention_days"
    assert platform.audit.retention_days() == 400


def test_purge_keeps_young_records_after_a_clock_step_back(platform: Platform) -> None:
    clock = Clock()
    platform.audit.clock = clock
    aged(platform, clock, 300, 10, 300)  # the third was written while the clock was wrong
    assert platform.audit.purge().removed == 1  # only the prefix before the young record
    assert [e.object for e in platform.audit.records(AuditFilter(all_tenants=True))][:2] == [
        "days=10",
        "days=300",
    ]
    assert platform.audit.verify().ok


def test_deleting_the_first_records_after_a_purge_is_found(platform: Platform) -> None:
    clock = Clock()
    platform.audit.clock = clock
    aged(platform, clock, 300, 300, 5, 4, 3)
    platform.audit.purge()
    assert platform.audit.verify().ok
    sql(platform, "DELETE FROM audit_records WHERE seq = 3")  # the first remaining record
    result = platform.audit.verify()
    assert (result.ok, result.bad_seq, result.kind) == (False, 4, "head-removed")


def test_deleting_a_prefix_without_purge_is_found(platform: Platform) -> None:
    fill(platform.audit, 5)
    sql(platform, "DELETE FROM audit_records WHERE seq <= 2")
    result = platform.audit.verify()
    assert (result.ok, result.bad_seq, result.kind) == (False, 3, "head-removed")


def test_export_of_a_purged_chain_verifies_offline(platform: Platform) -> None:
    clock = Clock()
    platform.audit.clock = clock
    aged(platform, clock, 300, 300, 5, 4)
    platform.audit.purge()
    exported = [
        json.loads(canonical_json(e.as_dict()))
        for e in platform.audit.iter_records(AuditFilter(all_tenants=True))
    ]
    assert verify_export(exported).ok
    exported[1]["actor"] = "someone else"
    result = verify_export(exported)
    assert (result.ok, result.bad_seq, result.kind) == (False, exported[1]["seq"], "hash-mismatch")
