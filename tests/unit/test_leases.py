"""The store's run leases: taken once, respected while live, taken over when expired or when the
holder is gone, and checked by every write of the journal."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from tether.errors import LeaseLost, NotFound, RunLeased
from tether.journal import RunRecord, Store, make_event
from tether.journal.leases import Lease, holder_gone, this_owner


def _record(run_id: str) -> RunRecord:
    now = time.time()
    return RunRecord(
        id=run_id, agent="a", agent_version="1", agent_ref=None, status="running", input="hi",
        output=None, reason=None, model=None, steps=0, input_tokens=0, output_tokens=0,
        cost_usd=0.0, parent_run_id=None, fork_step=None, requested_by=None, created_at=now,
        updated_at=now,
    )  # fmt: skip


def _start(store: Store, run_id: str, owner: str) -> Lease:
    lease = Lease(run_id, owner, 1)
    first = make_event(run_id, 1, "run_started", 0, time.time(), {"m": 1}, "0" * 64)
    store.create_run(_record(run_id), [first], lease=lease)
    return lease


def test_a_live_lease_is_respected_and_an_expired_one_taken_over(store_url: str) -> None:
    store = Store(store_url, lease_ttl=0.5)
    try:
        mine = _start(store, "r1", "hostA:1:aa")
        with pytest.raises(RunLeased, match="run r1 is being driven by hostA:1:aa until"):
            store.acquire_lease("r1", "hostB:2:bb")
        store.renew_lease(mine)  # the holder renews
        time.sleep(0.7)  # no renewal: the lease runs out
        theirs = store.acquire_lease("r1", "hostB:2:bb")
        assert theirs.token == mine.token + 1
        with pytest.raises(LeaseLost, match="lease lost on run r1"):
            store.renew_lease(mine)
        # the old holder's write is refused and lands nowhere
        last = store.events("r1")[-1]
        late = make_event("r1", 2, "feedback", 1, time.time(), {"m": 2}, last.hash)
        with pytest.raises(LeaseLost):
            store.append([late], lease=mine)
        assert [e.seq for e in store.events("r1")] == [1]
        store.append([late], lease=theirs)
        assert [e.seq for e in store.events("r1")] == [1, 2]
        # released: anyone takes it, with a newer token still
        store.release_lease(theirs)
        assert store.acquire_lease("r1", "hostC:3:cc").token == theirs.token + 1
        with pytest.raises(NotFound):
            store.acquire_lease("nope", "hostC:3:cc")
    finally:
        store.close()


def test_a_lease_of_a_process_gone_from_this_host_is_taken_over_at_once(store_url: str) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    gone = f"{socket.gethostname()}:{dead.stdout.strip()}:ff"
    assert holder_gone(gone)
    assert not holder_gone(this_owner())
    assert not holder_gone(f"elsewhere.example:{dead.stdout.strip()}:ff")
    store = Store(store_url, lease_ttl=600)
    try:
        _start(store, "r2", gone)
        assert store.acquire_lease("r2", this_owner()).token == 2
    finally:
        store.close()


def test_many_leases_renewed_at_once_name_those_taken_over(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease keeper renews every lease it holds in one transaction; a lease taken over is
    named, a run not written yet is not."""
    from tether.journal import leases as leases_module

    monkeypatch.setattr(leases_module, "RENEW_BATCH", 4)  # several statements in the one call
    store = Store(store_url, lease_ttl=0.5)
    try:
        held = [_start(store, f"r{i}", "hostA:1:aa") for i in range(10)]
        time.sleep(0.7)
        stolen = store.acquire_lease("r3", "hostB:2:bb")  # expired: taken over
        unwritten = Lease("not-yet", "hostA:1:aa", 1)
        assert store.renew_leases([*held, unwritten]) == {"r3"}
        # the others were renewed: live again, so another process is refused
        with pytest.raises(RunLeased):
            store.acquire_lease("r7", "hostB:2:bb")
        with pytest.raises(RunLeased, match="driven by hostB:2:bb"):  # still the new holder's
            store.acquire_lease("r3", "hostC:3:cc")
        assert stolen.token == held[3].token + 1
    finally:
        store.close()
