"""The sealed, hash-chained audit log: tamper detection (edit, insert, delete, reorder,
truncate, re-chain, wipe), the key, the head witness across processes, and retention purges
that keep the chain verifiable. Damage is done in SQL and on files, as an intruder would."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
import threading
from pathlib import Path

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
    advance_witness,
    canonical_json,
    read_key,
    read_witness,
    record_hash,
    verify_export,
    write_witness,
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


def key_of(audit: AuditLog) -> bytes:
    key = read_key(audit.key_path)
    assert key is not None
    return key


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
    # The documented rule, recomputed independently: HMAC-SHA256(key, prev_hash || JSON).
    fields = {k: first[k] for k in ("seq", "ts_ns", "actor", "role", "tenant_id", "action")}
    fields |= {k: first[k] for k in ("object", "outcome", "source")}
    fields["details"] = json.loads(str(first["details"]))
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    key = key_of(platform.audit)
    assert first["hash"] == hmac.new(key, (GENESIS + body).encode(), hashlib.sha256).hexdigest()


def test_empty_log_is_intact_and_the_key_is_made_with_the_first_record(
    platform: Platform,
) -> None:
    result = platform.audit.verify()
    assert (result.ok, result.message) == (True, "audit log is empty")
    assert not platform.audit.key_path.exists()  # nothing sealed yet
    platform.audit.record("test.first", "-", "ok")
    key_file = platform.audit.key_path
    assert key_file == platform.settings.data_dir / "audit.key"
    assert len(key_file.read_bytes()) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert read_witness(platform.audit.head_path, key_of(platform.audit)) == (
        1,
        row(platform, 1)["hash"],
    )
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
    digest = record_hash(key_of(platform.audit), str(prev["hash"]), forged)  # even with the key
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
    digest = record_hash(key_of(platform.audit), str(prev["hash"]), fields)
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
    key = key_of(platform.audit)
    assert verify_export(exported, key).ok
    assert not verify_export(exported, bytes(32)).ok  # verifiable by the key holder only
    exported[1]["actor"] = "someone else"
    result = verify_export(exported, key)
    assert (result.ok, result.bad_seq, result.kind) == (False, exported[1]["seq"], "hash-mismatch")


# -- sealing: an intruder with the database but not the key ------------------------------------


def rechain_from(platform: Platform, start: int, seal: object) -> tuple[int, str]:
    """Rewrite every record from ``start`` on with ``seal(prev, fields)``, linking each to the
    one before, as someone who can write the table would; returns the new (last seq, hash)."""
    with platform.registry.engine.connect() as conn:
        got = conn.execute(text("SELECT * FROM audit_records ORDER BY seq"))
        rows = [dict(r) for r in got.mappings()]
    prev = GENESIS if start == 1 else str(rows[start - 2]["hash"])
    for r in rows[start - 1 :]:
        fields = {**r, "details": json.loads(str(r["details"]))}
        digest = seal(prev, fields)  # type: ignore[operator]
        sql(
            platform,
            "UPDATE audit_records SET actor = :a, prev_hash = :p, hash = :h WHERE seq = :s",
            a=r["actor"],
            p=prev,
            h=digest,
            s=r["seq"],
        )
        prev = digest
    return int(str(rows[-1]["seq"])), prev


def sha256_seal(prev: str, fields: dict[str, object]) -> str:
    """The unkeyed rule the chain used before it was sealed."""
    body = canonical_json(
        {k: fields[k] for k in ("seq", "ts_ns", "actor", "role", "tenant_id")}
        | {k: fields[k] for k in ("action", "object", "outcome", "source", "details")}
    )
    return hashlib.sha256((prev + body).encode()).hexdigest()


@pytest.mark.parametrize("forger", ["sha256", "guessed-key"])
def test_an_edit_rechained_without_the_key_is_found(platform: Platform, forger: str) -> None:
    fill(platform.audit)
    sql(platform, "UPDATE audit_records SET actor = 'someone-else' WHERE seq = 2")
    guess = bytes(range(32))
    seal = sha256_seal if forger == "sha256" else (lambda p, f: record_hash(guess, p, f))
    last, digest = rechain_from(platform, 2, seal)
    # The witness rewritten too: in the old format, and sealed with the guessed key.
    (platform.audit.head_path).write_text(json.dumps({"seq": last, "hash": digest}))
    result = platform.audit.verify()
    assert (result.ok, result.bad_seq, result.kind) == (False, 2, "hash-mismatch")
    write_witness(platform.audit.head_path, guess, last, digest)
    assert platform.audit.verify().bad_seq == 2


def test_witness_pointed_back_after_deleting_the_newest_is_found(platform: Platform) -> None:
    fill(platform.audit)
    h7 = str(row(platform, 7)["hash"])
    sql(platform, "DELETE FROM audit_records WHERE seq > 7")
    # The intruder reads record 7's seal from the table and names it in a witness of their own.
    platform.audit.head_path.write_text(json.dumps({"seq": 7, "hash": h7}) + "\n")
    result = platform.audit.verify()
    assert (result.ok, result.kind) == (False, "witness-mismatch")
    assert "not sealed with the audit key" in result.message
    write_witness(platform.audit.head_path, bytes(32), 7, h7)
    assert platform.audit.verify().kind == "witness-mismatch"


def test_wiped_table_and_witness_is_reported_as_removed_even_after_new_records(
    platform: Platform,
) -> None:
    fill(platform.audit, 3)
    sql(platform, "DELETE FROM audit_records")
    platform.audit.head_path.unlink()
    result = platform.audit.verify()
    assert (result.ok, result.kind, result.bad_seq) == (False, "log-removed", None)
    assert "audit.key" in result.message
    # The next record starts again at seq 1, but the witness is not recreated from nothing:
    # the removal stays visible.
    platform.audit.record("test.after-wipe", "-", "ok")
    assert not platform.audit.head_path.exists()
    result = platform.audit.verify()
    assert (result.ok, result.kind) == (False, "witness-missing")


def test_records_after_the_genesis_witness_are_unwitnessed_not_damage(platform: Platform) -> None:
    # A crash between the first commit and its witness write leaves the seq-0 witness made
    # together with the key.
    platform.audit.record("test.first", "-", "ok")
    write_witness(platform.audit.head_path, key_of(platform.audit), 0, GENESIS)
    result = platform.audit.verify()
    assert (result.ok, result.unwitnessed) == (True, 1)


def with_key_file(platform: Platform, path: Path) -> AuditLog:
    settings = platform.settings.model_copy(update={"audit_key_file": path})
    return AuditLog(platform.registry, settings)


def test_bad_key_file_is_bad_input_naming_the_setting(platform: Platform, tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"12345")
    for path, words in ((short, "must hold 32 bytes"), (tmp_path, "cannot read")):
        audit = with_key_file(platform, path)
        with pytest.raises(BadInput) as err:
            audit.record("test.x", "-", "ok")
        assert err.value.field == "audit_key_file"
        assert words in err.value.message
        assert str(path) in err.value.message
    assert platform.audit.count() == 0  # nothing written unsealed
    # The key the platform makes, copied as 64 hex digits (with a newline), is the same key.
    platform.audit.record("test.x", "-", "ok")
    hex_key = tmp_path / "hex.key"
    hex_key.write_text(key_of(platform.audit).hex() + "\n")
    assert with_key_file(platform, hex_key).verify().ok
    hex_key.write_text(bytes(32).hex())
    assert with_key_file(platform, hex_key).verify().kind == "hash-mismatch"


def test_a_key_file_made_by_hand_before_the_first_record_reads_as_a_removed_log(
    platform: Platform, tmp_path: Path
) -> None:
    # Documented: a key file with no witness and no records is what a wiped log looks like,
    # so the platform must make the key itself (with the first record).
    by_hand = tmp_path / "by-hand.key"
    by_hand.write_bytes(bytes(range(32)))
    audit = with_key_file(platform, by_hand)
    assert audit.verify().kind == "log-removed"
    audit.record("test.x", "-", "ok")
    assert audit.verify().kind == "witness-missing"


def test_missing_key_with_records_refuses_to_write_or_verify(platform: Platform) -> None:
    fill(platform.audit, 2)
    platform.audit.key_path.unlink()
    fresh = AuditLog(platform.registry, platform.settings)  # e.g. the CLI, or a restart
    for call in (fresh.verify, lambda: fresh.record("test.x", "-", "ok")):
        with pytest.raises(BadInput) as err:
            call()
        assert err.value.field == "audit_key_file"
        assert "missing" in err.value.message
    assert not fresh.key_path.exists()  # no new key forking the chain
    assert platform.audit.count() == 2


# -- the head witness across processes ---------------------------------------------------------


def test_a_late_witness_write_never_moves_it_backwards(platform: Platform) -> None:
    server = platform.audit
    cli = AuditLog(platform.registry, platform.settings)  # a second appender, one data folder
    fill(server, 3)
    old = (3, str(row(platform, 3)["hash"]))
    cli.record("test.cli", "-", "ok")
    cli.record("test.cli", "-", "ok")
    newest = (5, str(row(platform, 5)["hash"]))
    # The server's write for record 3 arrives after the CLI's for record 5 (both commit first,
    # then write the witness outside the database lock).
    server._witness(*old)
    key = key_of(server)
    assert read_witness(server.head_path, key) == newest
    assert advance_witness(server.head_path, key, *old) == "behind"
    result = server.verify()
    assert (result.ok, result.unwitnessed) == (True, 0)
    server.record("test.server", "-", "ok")
    assert read_witness(server.head_path, key) == (6, str(row(platform, 6)["hash"]))


def test_two_logs_appending_at_once_leave_the_witness_at_the_head(platform: Platform) -> None:
    logs = [platform.audit, AuditLog(platform.registry, platform.settings)]
    platform.audit.record("test.first", "-", "ok")  # the key exists before the race

    def work(audit: AuditLog) -> None:
        for i in range(15):
            audit.record("test.race", f"n={i}", "ok")

    threads = [threading.Thread(target=work, args=(a,)) for a in logs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert platform.audit.count() == 31
    assert read_witness(platform.audit.head_path, key_of(platform.audit)) == (
        31,
        row(platform, 31)["hash"],
    )
    result = platform.audit.verify()
    assert (result.ok, result.unwitnessed) == (True, 0)
