"""The store is each of the storage protocols the engine can ask for."""

from __future__ import annotations

from tether.journal.protocols import (
    ApprovalStore,
    BlobStore,
    CacheStore,
    ControlStore,
    CounterStore,
    JournalSink,
    RunReader,
)
from tether.journal.store import Store


def test_the_store_satisfies_every_storage_protocol(store: Store) -> None:
    # typed assignments: mypy checks the signatures, isinstance that the methods are there
    sink: JournalSink = store
    runs: RunReader = store
    approvals: ApprovalStore = store
    counters: CounterStore = store
    controls: ControlStore = store
    blobs: BlobStore = store
    cache: CacheStore = store
    for part, protocol in (
        (sink, JournalSink),
        (runs, RunReader),
        (approvals, ApprovalStore),
        (counters, CounterStore),
        (controls, ControlStore),
        (blobs, BlobStore),
        (cache, CacheStore),
    ):
        assert isinstance(part, protocol)
    assert blobs.get_blob(blobs.put_blob("text")) == "text"
    assert controls.paused("nobody") == (False, "")


def test_a_part_of_the_store_is_not_the_whole() -> None:
    class OnlyBlobs:
        def put_blob(self, body: str) -> str:
            return body

        def get_blob(self, digest: str) -> str:
            return digest

    assert isinstance(OnlyBlobs(), BlobStore)
    assert not isinstance(OnlyBlobs(), JournalSink)
    assert not isinstance(OnlyBlobs(), CounterStore)
