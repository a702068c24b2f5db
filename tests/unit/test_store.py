"""The store suite: the same tests on SQLite and on PostgreSQL."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sqlite3
import time

import pytest
import sqlalchemy as sa

from tether.errors import JournalError, NotFound, UsageError
from tether.journal import (
    GENESIS,
    ApprovalRecord,
    RunRecord,
    Store,
    make_event,
    migrations,
    verify_chain,
)
from tether.journal.faults import unique_violation
from tether.journal.store import args_hash


def _run(run_id: str = "r1") -> RunRecord:
    now = time.time()
    return RunRecord(
        id=run_id,
        agent="a",
        agent_version="1",
        agent_ref=None,
        status="running",
        input={"q": "hi"},
        output=None,
        reason=None,
        model="scripted",
        steps=0,
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        parent_run_id=None,
        fork_step=None,
        requested_by="me",
        created_at=now,
        updated_at=now,
    )


def _events(run_id: str, n: int) -> list:
    out, prev = [], GENESIS
    for i in range(1, n + 1):
        ev = make_event(run_id, i, "feedback", i, time.time(), {"message": f"m{i}", "ü": "☃"}, prev)
        out.append(ev)
        prev = ev.hash
    return out


def test_migrations_are_idempotent(store_url: str) -> None:
    first = Store(store_url)
    second = Store(store_url)
    assert first.schema_version == second.schema_version == migrations.MIGRATIONS[-1][0]
    first.close()
    second.close()


def test_events_round_trip_and_chain_verifies(store: Store) -> None:
    store.create_run(_run())
    events = _events("r1", 30)
    store.append(events[:10])
    store.append(events[10:], {"status": "succeeded", "steps": 30, "output": {"x": 1}})
    loaded = store.events("r1")
    assert [e.seq for e in loaded] == list(range(1, 31))
    assert loaded == events
    assert verify_chain("r1", loaded) is None
    run = store.get_run("r1")
    assert run.status == "succeeded" and run.output == {"x": 1} and run.input == {"q": "hi"}


def test_payloads_json_cannot_speak_natively_still_round_trip(store: Store) -> None:
    """The fast encoder refuses some values; they go through the standard library instead, and
    every event still stores, verifies and reads back."""
    store.create_run(_run())
    payloads = [
        {"big": 2**70, "neg": -(2**80)},  # beyond 64 bits
        {"text": "lone \udc80 surrogate"},
        {"deep": functools.reduce(lambda acc, _: [acc], range(300), [])},  # deeper than 254
        {"nan": float("nan"), "inf": float("inf")},
        {1: "int key", "t": (1, 2), "obj": object.__name__},
    ]
    events, prev = [], GENESIS
    for i, payload in enumerate(payloads, start=1):
        ev = make_event("r1", i, "feedback", i, time.time(), payload, prev)
        events.append(ev)
        prev = ev.hash
    assert json.loads(events[0].payload_json)["big"] == 2**70
    assert events[3].payload["nan"] is None or math.isnan(events[3].payload["nan"])
    assert events[4].payload == {"1": "int key", "t": [1, 2], "obj": "object"}
    assert events[1].payload_json.isascii()  # the surrogate is escaped, so any store takes it
    store.append(events)
    loaded = store.events("r1")
    assert verify_chain("r1", loaded) is None
    assert [e.payload_json for e in loaded] == [e.payload_json for e in events]
    assert loaded[1].payload == {"text": "lone \udc80 surrogate"}


def test_duplicate_append_is_refused(store: Store) -> None:
    store.create_run(_run())
    events = _events("r1", 3)
    store.append(events)
    with pytest.raises(Exception, match="another process appended"):
        store.append(events[2:])
    assert len(store.events("r1")) == 3  # nothing half-written


def test_an_append_that_skips_or_overlaps_stored_events_is_refused(store: Store) -> None:
    """Every append must continue the stored journal exactly (as a second writer would not)."""
    store.create_run(_run())
    events = _events("r1", 6)
    store.append(events[:4])
    for wrong in (events[1:3], events[3:], events[5:]):  # inside, overlapping, leaving a gap
        with pytest.raises(Exception, match="another process appended"):
            store.append(wrong)
    store.append(events[4:])
    assert store.events("r1") == events
    assert store.count_events("r1") == 6


def test_a_group_commit_refuses_only_the_write_that_conflicts(store: Store) -> None:
    """Many runs' writes in one transaction: a write that does not continue its run's journal
    is refused alone (the group is written again, each write in a savepoint); the others, before
    and after it, are stored."""
    from tether.errors import JournalConflict
    from tether.journal.writes import JournalWrite

    for run_id in ("r1", "r2", "r3"):
        store.create_run(_run(run_id))
    one, two, three = _events("r1", 2), _events("r2", 4), _events("r3", 2)
    store.append(two[:2])
    group = [JournalWrite(one), JournalWrite(two[:2]), JournalWrite(three)]  # r2's overlaps
    errors = store.write_group(group)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], JournalConflict) and "another process appended" in str(errors[1])
    assert store.events("r1") == one and store.events("r3") == three
    assert store.events("r2") == two[:2]  # as it was
    assert store.write_group([JournalWrite(two[2:])]) == [None]  # and it goes on from there
    assert store.events("r2") == two


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each batch the store's write path applies, in order."""
    from tether.journal.transaction import TransactionSteps

    sizes: list[int] = []
    batch = TransactionSteps._apply_batch

    def counted(self: Store, cur: object, prepared: list) -> None:
        sizes.append(len(prepared))
        batch(self, cur, prepared)

    monkeypatch.setattr(TransactionSteps, "_apply_batch", counted)
    return sizes


def test_a_batched_group_refuses_only_the_lost_lease_and_the_moved_anchor(
    store: Store, batches: list[int]
) -> None:
    """Running runs' writes under their leases go in as one batch (a statement for all their
    leases, one for all their events, one for all their anchors); a write whose lease was taken
    over, or whose run's journal moved on, is refused alone and says which."""
    from tether.errors import JournalConflict, LeaseLost
    from tether.journal.leases import Lease
    from tether.journal.writes import JournalWrite

    events = {r: _events(r, 3) for r in ("r1", "r2", "r3", "r4")}
    leases = {}
    for run_id, evs in events.items():
        leases[run_id] = Lease(run_id, "hostA:1:aa", 1)
        store.create_run(_run(run_id), evs[:1], lease=leases[run_id])

    def group(*runs: str, upto: int = 2) -> list:
        return [JournalWrite(events[r][1:upto], lease=leases[r]) for r in runs]

    assert store.write_group(group("r1", "r2", "r3", "r4")) == [None] * 4  # one batch
    assert batches == [4]
    store.acquire_lease("r2", "hostA:1:aa")  # taken over (a newer token): r2's lease is lost
    store.append(events["r3"][2:3], lease=leases["r3"])  # r3's journal moved on meanwhile
    errors = store.write_group(
        [JournalWrite(events[r][2:3], lease=leases[r]) for r in ("r1", "r2", "r3", "r4")]
    )
    assert errors[0] is None and errors[3] is None
    assert isinstance(errors[1], LeaseLost)
    assert isinstance(errors[2], JournalConflict) and "another process appended" in str(errors[2])
    assert batches == [4, 4]  # tried as a batch, then taken apart
    for run_id in ("r1", "r3", "r4"):
        assert store.events(run_id) == events[run_id]
    assert store.events("r2") == events["r2"][:2]  # nothing of the refused write
    assert all(verify_chain(r, store.events(r)) is None for r in events)


def test_new_runs_and_ending_runs_are_batched_with_the_rest(
    store: Store, batches: list[int]
) -> None:
    """A group of new runs (with their first leases and ledger entries), next events and last
    writes (the run row's columns set, the lease given up) goes in as one batch; a new run whose
    id exists is refused alone, and the others stand as if written one by one."""
    from tether.errors import JournalConflict
    from tether.journal.audit import verify_ledger
    from tether.journal.leases import Lease
    from tether.journal.writes import JournalWrite

    owner = "hostA:1:aa"
    events = {r: _events(r, 3) for r in ("old1", "old2", "new1", "new2", "new3")}
    leases = {r: Lease(r, owner, 1) for r in events}
    for run_id in ("old1", "old2"):
        store.create_run(_run(run_id), events[run_id][:1], lease=leases[run_id])

    def new_run(run_id: str, upto: int) -> JournalWrite:
        row = {**_run(run_id).to_dict(), "input": '{"q":"hi"}'}
        return JournalWrite(events[run_id][:upto], new_run=row, lease=leases[run_id])

    ended = {"status": "succeeded", "steps": 3, "output": {"answer": 42}, "reason": None}
    group = [
        new_run("new1", 2),
        new_run("new2", 1),
        JournalWrite(events["old1"][1:], lease=leases["old1"]),
        JournalWrite(
            events["old2"][1:], run_update=ended, lease=leases["old2"], release_lease=True
        ),
    ]
    assert store.write_group(group) == [None] * 4
    assert batches == [4]
    for run_id, upto in (("new1", 2), ("new2", 1), ("old1", 3), ("old2", 3)):
        assert store.events(run_id) == events[run_id][:upto]
        assert verify_chain(run_id, store.events(run_id)) is None
    assert verify_ledger(store) == []
    runs = store.t["runs"]
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(runs.c.id, runs.c.lease_owner, runs.c.lease_token))
        held = {r.id: (r.lease_owner, r.lease_token) for r in rows}
    assert held["new1"] == held["new2"] == held["old1"] == (owner, 1)  # the leases are held
    assert held["old2"][0] is None  # given up with its last write
    finished = store.get_run("old2")
    assert (finished.status, finished.steps, finished.output) == ("succeeded", 3, {"answer": 42})
    # the next events of the new runs continue from the anchors the batch set
    more = [JournalWrite(events["new1"][2:], lease=leases["new1"]), new_run("old1", 1)]
    more += [JournalWrite(events["new2"][1:], lease=leases["new2"]), new_run("new3", 3)]
    errors = store.write_group(more)
    assert errors[0] is None and errors[2] is None and errors[3] is None
    assert isinstance(errors[1], JournalConflict) and "already exists" in str(errors[1])
    assert batches == [4, 4]  # tried as a batch, then taken apart
    for run_id in ("new1", "new2", "new3"):
        assert store.events(run_id) == events[run_id]
    assert verify_ledger(store) == []


def _collision(exc: BaseException) -> bool:
    """Whether ``exc`` is the database's own uniqueness error (not the text of one)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return True
    import psycopg

    return isinstance(exc, psycopg.errors.UniqueViolation)


def test_a_duplicate_run_and_a_conflicting_append_are_told_apart(store: Store) -> None:
    """Both collide with a key another write stored first; the store tells which by the
    database's error (its class and code, and the table it names), not by the error's text."""
    events = _events("r1", 3)
    store.create_run(_run(), events[:1])
    with pytest.raises(JournalError, match="run r1 already exists") as twice:
        store.create_run(_run(), events[:1])
    assert _collision(twice.value.__cause__)
    store.append(events[1:])
    # the run's anchor lags its events, as it would if another writer's rows got in between
    # this writer's check and its insert: the check passes and the insert collides
    runs = store.t["runs"]
    with store.engine.begin() as conn:
        conn.execute(
            runs.update().where(runs.c.id == "r1").values(event_count=2, head_hash=events[1].hash)
        )
    with pytest.raises(JournalError, match="another process appended") as raced:
        store.append(events[2:])
    assert _collision(raced.value.__cause__)
    # a new run whose events collide is an append that lost, not a run that exists
    stray = _events("r2", 2)
    store.create_run(_run("r2"), stray)
    with store.engine.begin() as conn:
        conn.execute(runs.delete().where(runs.c.id == "r2"))
        conn.execute(store.t["run_ledger"].delete().where(store.t["run_ledger"].c.run_id == "r2"))
    with pytest.raises(JournalError, match="another process appended") as lost:
        store.create_run(_run("r2"), stray)
    assert _collision(lost.value.__cause__)
    assert store.events("r1") == events and store.events("r2") == stray


def test_unique_violation_names_the_table_and_ignores_other_integrity_errors(
    store: Store,
) -> None:
    dialect = store.engine.dialect
    store.create_run(_run())
    runs = store.t["runs"]
    row = {**_run().to_dict(), "input": "{}"}
    with pytest.raises(sa.exc.IntegrityError) as duplicate, store.engine.begin() as conn:
        conn.execute(runs.insert().values(**row))
    assert unique_violation(duplicate.value, dialect) == "runs"
    assert unique_violation(duplicate.value.orig, dialect) == "runs"
    with pytest.raises(sa.exc.IntegrityError) as missing, store.engine.begin() as conn:
        conn.execute(runs.insert().values(**{**row, "id": "r9", "agent": None}))
    assert unique_violation(missing.value, dialect) is None
    assert unique_violation(ValueError("UNIQUE constraint failed: runs.id"), dialect) is None


def test_events_after_a_sequence_number_link_to_the_stored_chain(store: Store) -> None:
    store.create_run(_run())
    events = _events("r1", 9)
    store.append(events[:3])
    store.append(events[3:7])
    store.append(events[7:])
    for after in (0, 2, 3, 5, 8, 9):
        assert store.events("r1", after_seq=after) == events[after:]


def test_a_version_1_journal_moves_to_the_events_table_intact(store_url: str) -> None:
    """A store written by version 1 of the schema (a row per event) is migrated on open, through
    version 2's batches to version 3's events table: every event reads back exactly, the chain
    verifies, and new events continue it."""
    from tether.journal import migrations
    from tether.journal.store import normalise_url

    engine = sa.create_engine(normalise_url(store_url))
    first_only = migrations.MIGRATIONS[:1]
    saved = migrations.MIGRATIONS
    migrations.MIGRATIONS = first_only
    try:
        assert migrations.migrate(engine) == 1
    finally:
        migrations.MIGRATIONS = saved
    runs = {"old1": _events("old1", 5), "old2": _events("old2", 1200)}
    with engine.begin() as conn:
        for run_id, events in runs.items():
            row = _run(run_id).to_dict()
            row["input"] = json.dumps(row["input"])
            conn.execute(
                sa.text(
                    f"INSERT INTO runs ({','.join(row)}) VALUES ({','.join(':' + k for k in row)})"
                ),
                row,
            )
            conn.execute(
                sa.text(
                    "INSERT INTO events (run_id, seq, type, step, ts, payload, hash) "
                    "VALUES (:r, :s, :t, :st, :ts, :p, :h)"
                ),
                [
                    {
                        "r": e.run_id,
                        "s": e.seq,
                        "t": e.type,
                        "st": e.step,
                        "ts": e.ts,
                        "p": e.payload_json,
                        "h": e.hash,
                    }
                    for e in events
                ],
            )
    engine.dispose()
    store = Store(store_url)
    try:
        assert store.schema_version == migrations.MIGRATIONS[-1][0]
        for run_id, events in runs.items():
            assert store.events(run_id) == events
            assert verify_chain(run_id, store.events(run_id)) is None
        last = store.events("old1")[-1]
        store.append([make_event("old1", 6, "feedback", 6, time.time(), {"m": 6}, last.hash)])
        assert verify_chain("old1", store.events("old1")) is None
        assert store.count_events("old2") == 1200
        assert not sa.inspect(store.engine).has_table("event_batches")
    finally:
        store.close()


def test_run_prefix_lookup_and_not_found(store: Store) -> None:
    store.create_run(_run("abcdef123"))
    assert store.get_run("abcdef").id == "abcdef123"
    with pytest.raises(NotFound, match="at least 6 characters"):
        store.get_run("abcd")  # too short to be a prefix
    with pytest.raises(NotFound):
        store.get_run("zzz")


def test_list_runs_filters(store: Store) -> None:
    store.create_run(_run("r1"))
    store.create_run(_run("r2"))
    store.update_run("r2", status="failed")
    assert {r.id for r in store.list_runs()} == {"r1", "r2"}
    assert [r.id for r in store.list_runs(status="failed")] == ["r2"]


def _approval(aid: str = "ap1") -> ApprovalRecord:
    args = {"order_id": "#1", "amount": 5}
    return ApprovalRecord(
        id=aid,
        run_id="r1",
        agent="a",
        call_id="c1",
        step=1,
        tool="refund",
        args=args,
        args_hash=args_hash(args),
        reason="irreversible",
        rule="effect-default",
        status="pending",
        requested_by=None,
        decided_by=None,
        decided_at=None,
        edited_args=None,
        decision_reason=None,
        consumed_at=None,
        created_at=time.time(),
    )


def test_approval_decided_once_and_consumed_once(store: Store) -> None:
    store.create_approval(_approval())
    # a second request for the same call returns the existing approval
    assert store.create_approval(_approval("ap2")).id == "ap1"
    assert [a.id for a in store.list_approvals()] == ["ap1"]
    decided = store.decide_approval(
        "ap1", status="edited", decided_by="alice", edited_args={"order_id": "#1", "amount": 3}
    )
    assert decided.status == "edited" and decided.edited_args == {"order_id": "#1", "amount": 3}
    with pytest.raises(UsageError, match="already decided"):
        store.decide_approval("ap1", status="approved", decided_by="mallory")
    assert store.consume_approval("ap1") is True
    assert store.consume_approval("ap1") is False
    assert store.list_approvals() == []


def test_counter_reservation_respects_limits(store: Store) -> None:
    results = [
        store.reserve("refunds", "cust1", 0, amount=100.0, max_count=3, max_total=250.0)
        for _ in range(4)
    ]
    assert [ok for ok, _, _ in results] == [True, True, False, False]
    assert store.counter("refunds", "cust1", 0) == (2, 200.0)
    # another window and another key are separate counters
    assert store.reserve("refunds", "cust1", 86400, amount=1, max_count=3, max_total=None)[0]
    assert store.reserve("refunds", "cust2", 0, amount=1, max_count=3, max_total=None)[0]


def test_kill_switch(store: Store) -> None:
    assert store.paused("a") == (False, "")
    store.set_paused("a", True, by="ops", reason="incident 42")
    paused, why = store.paused("a")
    assert paused and "incident 42" in why and "ops" in why
    store.set_paused("a", False, by="ops")
    assert store.paused("a")[0] is False


def test_blobs_are_content_addressed(store: Store) -> None:
    big = "x" * 2_000_000
    h1 = store.put_blob(big)
    h2 = store.put_blob(big)
    assert h1 == h2 and store.get_blob(h1) == big


def test_cache_ttl(store: Store) -> None:
    store.cache_set("k", "v", ttl=10, now=1000.0)
    assert store.cache_get("k", now=1005.0) == "v"
    assert store.cache_get("k", now=1011.0) is None


def test_an_events_time_is_written_as_repr_writes_it() -> None:
    """The hash and the stored line hold ``repr`` of the time; orjson writes it for the range
    of Unix times, so older journals verify unchanged. Checked across every magnitude."""
    import random
    import struct

    from tether.journal.chain import time_text

    rnd = random.Random(20261126)
    samples = [1.0, 1e15 - 0.125, 1e15, 1e16, 0.5, 1e-7, -3.0, 0.0, math.nan, math.inf]
    samples += [float(n) for n in (1, 10, 999, 1_700_000_000, 10**14)]
    for exponent in range(-8, 17):
        for _ in range(4_000):
            samples.append(rnd.uniform(1.0, 10.0) * 10.0**exponent)
    # random bit patterns: every mantissa is as likely, including the hardest to shorten
    samples += [
        struct.unpack("<d", rnd.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(20_000)
    ]
    for ts in samples:
        assert time_text(ts) == repr(ts), ts
    ev = make_event("r", 1, "feedback", 0, 1_795_674_529.0834894, {"m": 1}, GENESIS)
    raw = f"{GENESIS}|1|feedback|0|1795674529.0834894|" + '{"m":1}'
    assert ev.hash == hashlib.sha256(raw.encode()).hexdigest()


def test_sealed_events_chain_verify_and_round_trip_the_batch_layout() -> None:
    """A flush's sealed events link in order, verify, and read back from the old batch layout."""
    from tether.journal.batches import decode_batch, encode_batch
    from tether.journal.chain import seal_events, stored_event
    from tether.journal.events import Event, EventType
    from tether.journal.jsontext import encode_payload_bytes

    times = [1_795_674_529.0834894, 0.5, 1e16, 1_700_000_000.0, 1e-7, 12.25]
    payloads = [{"m": i, "ü": "☃", "big": 2**70 if i == 2 else i} for i in range(len(times))]
    raws = [encode_payload_bytes(p) for p in payloads]
    pending = [
        Event("r", i + 1, "feedback", i, ts, raw.decode(), "", "")
        for i, (ts, raw) in enumerate(zip(times, raws, strict=True))
    ]
    sealed = seal_events(pending, raws, GENESIS)
    prev = GENESIS
    for i, (ev, raw) in enumerate(zip(pending, raws, strict=True)):
        expected = stored_event(
            "r", ev.seq, EventType.FEEDBACK, i, ev.ts, raw, ev.payload_json, prev
        )
        assert sealed[i] == expected
        prev = expected.hash
    assert verify_chain("r", sealed) is None
    # the batch layout of schema version 2 reads back the same events
    assert decode_batch("r", 1, len(sealed), encode_batch(sealed), GENESIS) == sealed
