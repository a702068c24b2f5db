"""What the engine needs from storage, one protocol per concern.

:class:`~tether.journal.store.Store` satisfies every one of them (mypy checks it, below); code
that needs only part of the store can ask for that part, and a test can hand it a small fake.
Each protocol is ``runtime_checkable``, so ``isinstance`` tells whether an object has its
methods (not whether their signatures match: that is mypy's part).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tether.journal.approvals import ApprovalRecord
from tether.journal.counters import Reservation
from tether.journal.events import Event
from tether.journal.leases import Lease
from tether.journal.runs import RunRecord


@runtime_checkable
class JournalSink(Protocol):
    """A run's journal: written in order by the one process that holds the run's lease."""

    def create_run(
        self,
        record: RunRecord,
        events: Sequence[Event] = (),
        values: dict[str, Any] | None = None,
        *,
        lease: Lease | None = None,
        approvals: Sequence[ApprovalRecord] = (),
    ) -> None: ...

    def append(
        self,
        events: Sequence[Event],
        run_update: dict[str, Any] | None = None,
        *,
        lease: Lease | None = None,
        approvals: Sequence[ApprovalRecord] = (),
    ) -> None: ...

    def events(self, run_id: str, *, after_seq: int = 0) -> list[Event]: ...

    def acquire_lease(self, run_id: str, owner: str) -> Lease: ...

    def renew_lease(self, lease: Lease) -> None: ...

    def renew_leases(self, leases: Sequence[Lease]) -> set[str]: ...

    def release_lease(self, lease: Lease) -> None: ...


@runtime_checkable
class RunReader(Protocol):
    """Runs' rows, and the key a run's chain is checked with."""

    def get_run(self, run_id: str) -> RunRecord: ...

    def list_runs(
        self,
        *,
        status: str | None = None,
        agent: str | None = None,
        limit: int = 50,
        parent: str | None = None,
    ) -> list[RunRecord]: ...

    def chain_key(self, run_id: str) -> bytes | None: ...


@runtime_checkable
class ApprovalStore(Protocol):
    """Approval rows: requested with the events that ask for them, decided once, used once."""

    def create_approval(self, record: ApprovalRecord) -> ApprovalRecord: ...

    def get_approval(self, approval_id: str) -> ApprovalRecord: ...

    def approval_for_call(self, run_id: str, step: int, position: int) -> ApprovalRecord | None: ...

    def list_approvals(
        self, *, status: str | None = "pending", run_id: str | None = None, agent: str | None = None
    ) -> list[ApprovalRecord]: ...

    def decide_approval(
        self,
        approval_id: str,
        *,
        status: str,
        decided_by: str,
        reason: str | None = None,
        edited_args: dict[str, Any] | None = None,
    ) -> ApprovalRecord: ...

    def consume_approval(self, approval_id: str) -> bool: ...


@runtime_checkable
class CounterStore(Protocol):
    """Counters that hard limits reserve before a call and settle or release after it."""

    def reserve_many(self, wanted: Sequence[Reservation]) -> int | None: ...

    def release_many(self, held: Sequence[Reservation]) -> None: ...

    def settle(self, held: Reservation, amount: float) -> None: ...

    def counter(self, name: str, key: str, window_start: int) -> tuple[int, float]: ...


@runtime_checkable
class ControlStore(Protocol):
    """Agents' kill switches."""

    def paused(self, agent: str, *, max_age: float = 0.0) -> tuple[bool, str]: ...

    def set_paused(self, agent: str, paused: bool, *, by: str, reason: str = "") -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    """Text kept under the hash of its content."""

    def put_blob(self, body: str) -> str: ...

    def get_blob(self, digest: str) -> str: ...


@runtime_checkable
class CacheStore(Protocol):
    """Text kept under a key until it expires (the response cache)."""

    def cache_get(self, key: str, now: float | None = None) -> str | None: ...

    def cache_set(self, key: str, value: str, ttl: float, now: float | None = None) -> None: ...


if TYPE_CHECKING:  # mypy checks that the store is each of them
    from tether.journal.store import Store

    def _the_store_satisfies_each_protocol(store: Store) -> None:
        parts: tuple[
            JournalSink, RunReader, ApprovalStore, CounterStore, ControlStore, BlobStore, CacheStore
        ] = (store, store, store, store, store, store, store)
        del parts
