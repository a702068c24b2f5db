"""The support-desk store on a real database: PostgreSQL (row locks) and an SQLite file.

Each PostgreSQL test works in tables with its own random prefix and drops them afterwards, so
parallel runs do not interfere. Set ``TETHER_TEST_PG_URL`` to use another server.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from examples.support_desk import data  # noqa: E402

pytestmark = pytest.mark.skipif(not data.available(), reason="τ²-bench retail data not found")

if data.available():
    from examples.support_desk.oracle_direct import compare_store, replay_task
    from examples.support_desk.store import Store
    from examples.support_desk.tools import TOOLS_BY_NAME

    from tether import ToolContext, ToolError

PG_URL = os.environ.get("TETHER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        import sqlalchemy

        engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture
def pg_store() -> Iterator[Store]:
    if not _pg_available():
        pytest.skip("PostgreSQL is not reachable")
    store = Store.open(PG_URL, prefix=f"sd_{uuid.uuid4().hex[:10]}_")
    try:
        yield store
    finally:
        store.drop()
        store.close()


def _pending_order_with_gift_card() -> str:
    for order_id, order in data.load_db()["orders"].items():
        method = order["payment_history"][0]["payment_method_id"]
        if order["status"] == "pending" and method.startswith("gift_card"):
            return order_id
    raise AssertionError("no such order")


def _race_cancel(stores: list[Store], order_id: str) -> list[str]:
    """Cancel one order from several threads at once; return 'ok' or the error per thread."""
    tool = TOOLS_BY_NAME["cancel_pending_order"]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(i: int, store: Store) -> None:
        ctx = ToolContext(
            run_id=f"r{i}", agent="a", step=0, call_id=f"c{i}", idempotency_key=f"k{i}", deps=store
        )
        barrier.wait()
        try:
            tool.fn(ctx, order_id=order_id, reason="no longer needed")
            outcome = "ok"
        except ToolError as exc:
            outcome = str(exc)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=worker, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


@pytest.mark.postgres
def test_postgres_store_loads_and_replays_tasks(pg_store: Store) -> None:
    assert pg_store.count("users") == 500
    assert pg_store.dump() == data.load_db()
    for task_id in ("0", "20", "36", "64", "100", "105", "111"):
        pg_store.load()
        report = replay_task(task_id, pg_store)
        assert report.ok, report.problems[:10]


@pytest.mark.postgres
def test_postgres_row_locks_allow_one_cancel_only(pg_store: Store) -> None:
    order_id = _pending_order_with_gift_card()
    others = [Store.open(PG_URL, prefix=pg_store.prefix, reset=False) for _ in range(3)]
    try:
        outcomes = _race_cancel([pg_store, *others], order_id)
    finally:
        for s in others:
            s.close()
    assert sorted(outcomes) == ["Non-pending order cannot be cancelled"] * 3 + ["ok"]
    order = pg_store.get("orders", order_id)
    assert order is not None
    assert [e["transaction_type"] for e in order["payment_history"]] == ["payment", "refund"]


def test_sqlite_file_serialises_concurrent_writers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    first = Store.open(url)
    others = [Store.open(url, reset=False) for _ in range(3)]
    order_id = _pending_order_with_gift_card()
    try:
        outcomes = _race_cancel([first, *others], order_id)
    finally:
        for s in others:
            s.close()
    assert sorted(outcomes) == ["Non-pending order cannot be cancelled"] * 3 + ["ok"]
    changed = {"orders": {order_id: first.get("orders", order_id)}}
    user_id = data.load_db()["orders"][order_id]["user_id"]
    changed["users"] = {user_id: first.get("users", user_id)}
    assert compare_store(first, changed) == []
    first.close()
