"""Property tests of the hash chain: any sequence of events encodes, verifies and decodes to
equal objects, in memory and through the store, keyed or not; any typed event of any class
round-trips through its stored text to an equal object."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import fresh_pg_url
from tether.journal import Store
from tether.journal.chain import GENESIS, make_event, verify_chain
from tether.journal.events import EVENT_CLASSES, Event, EventData
from tether.journal.store import RunRecord
from tether.messages import ModelResponse, ToolCall, Usage

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
EVENT = st.tuples(
    st.from_regex(r"[a-z_]{1,40}", fullmatch=True),
    st.integers(min_value=0, max_value=2**31 - 1),
    st.floats(min_value=-1e12, max_value=1e16, allow_nan=False),
    st.dictionaries(st.text(), JSON, max_size=5),
)
KEYS = st.none() | st.binary(min_size=1, max_size=32)


def _chain(
    run_id: str, specs: list[tuple[str, int, float, dict[str, Any]]], key: bytes | None
) -> list[Event]:
    events: list[Event] = []
    prev = GENESIS
    for seq, (type_, step, ts, payload) in enumerate(specs, start=1):
        events.append(make_event(run_id, seq, type_, step, ts, payload, prev, key))
        prev = events[-1].hash
    return events


@given(st.lists(EVENT, max_size=8), KEYS)
def test_any_chain_verifies_and_decodes_to_equal_payloads(
    specs: list[tuple[str, int, float, dict[str, Any]]], key: bytes | None
) -> None:
    events = _chain("r", specs, key)
    assert verify_chain("r", events, key) is None
    assert [e.payload for e in events] == [s[3] for s in specs]
    assert [(e.type, e.step, e.ts) for e in events] == [s[:3] for s in specs]
    if events:  # another key (or none) does not verify the same chain
        other = None if key is not None else b"another key"
        assert verify_chain("r", events, other) is not None


def _record(run_id: str) -> RunRecord:
    return RunRecord(
        run_id, "a", "1", None, "running", {}, None, None, None, 0, 0, 0, 0.0, None, None, None,
        1.0, 1.0,
    )  # fmt: skip


def _store_round_trip(store: Store, specs: list[tuple[str, int, float, dict[str, Any]]]) -> None:
    run_id = uuid.uuid4().hex
    events = _chain(run_id, specs, store.journal_key)
    half = len(events) // 2
    store.create_run(_record(run_id), events[:half])
    store.append(events[half:])
    stored = store.events(run_id)
    assert stored == events
    assert verify_chain(run_id, stored, store.journal_key) is None
    assert [e.payload for e in stored] == [s[3] for s in specs]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENT, min_size=1, max_size=6))
def test_any_chain_round_trips_through_sqlite(
    specs: list[tuple[str, int, float, dict[str, Any]]],
) -> None:
    _store_round_trip(_SQLITE, specs)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EVENT, min_size=1, max_size=6))
def test_any_chain_round_trips_through_postgresql(
    specs: list[tuple[str, int, float, dict[str, Any]]],
) -> None:
    _store_round_trip(_postgres(), specs)


_SQLITE = Store(str(Path(__import__("tempfile").mkdtemp()) / "chain.db"))
_PG: list[Store] = []


def _postgres() -> Store:
    if not _PG:
        from tests.conftest import PG_URL

        _PG.append(Store(fresh_pg_url(PG_URL)))
    return _PG[0]


# -- typed events ------------------------------------------------------------------------------

TEXT = st.text(max_size=20)
FINITE = st.floats(allow_nan=False, allow_infinity=False)
OBJECT = st.dictionaries(TEXT, JSON, max_size=4)
RESPONSE = st.builds(
    ModelResponse,
    text=TEXT,
    tool_calls=st.lists(
        st.builds(ToolCall, id=TEXT, name=TEXT, arguments=OBJECT | TEXT), max_size=3
    ),
    usage=st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6)),
    model=TEXT,
    cost_usd=st.none() | st.floats(min_value=0, max_value=10, allow_nan=False),
    meta=OBJECT,
)


def _for(hint: Any) -> st.SearchStrategy[Any]:
    """A strategy for values of a field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*[_for(a) for a in args])
    if origin is tuple:
        return st.lists(_for(args[0]), max_size=3).map(tuple)
    if origin is dict:
        return OBJECT
    if hint is Any:
        return JSON
    if hint is type(None):
        return st.none()
    if hint is ModelResponse:
        return RESPONSE
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return st.sampled_from(list(hint))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _builds(hint)
    simple = {str: TEXT, int: st.integers(-(2**62), 2**62), float: FINITE, bool: st.booleans()}
    return simple[hint]


def _builds(cls: type) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _for(hints[f.name]) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


TYPED = st.one_of(*[_builds(cls) for cls in EVENT_CLASSES.values()])


@given(st.lists(TYPED, max_size=6), KEYS)
def test_any_typed_events_chain_verify_and_decode_to_equal_objects(
    datas: list[EventData], key: bytes | None
) -> None:
    events = _chain("r", [(d.type.value, 1, 1.5, d.to_json()) for d in datas], key)
    assert verify_chain("r", events, key) is None
    assert [e.data for e in events] == datas
