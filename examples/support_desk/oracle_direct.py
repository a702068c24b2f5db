"""Replay each task's ground-truth actions directly through the tools, and check the outcome.

No model is involved: the calls of ``evaluation_criteria.actions`` run in order against a fresh
store, and the result is compared with ``expected_outcomes.json``:

* every call the reference tools accepted must succeed, every call they rejected must fail
  (with the same message, minus the ``ValueError:`` prefix);
* every record listed in ``changed`` must equal its final value field by field (a null field
  and an absent one are equal), and every other record must be unchanged.

    report = replay_task("0")
    assert report.ok, report.problems
    python -m examples.support_desk.oracle_direct     # prints a summary of all 114 tasks
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from examples.support_desk.data import TABLES, Database, load_expected, load_tasks
from examples.support_desk.store import Store, initial_docs
from examples.support_desk.tools import tool_named
from tether import ToolContext, ToolError


@dataclass(slots=True)
class CallOutcome:
    """One ground-truth call: what happened and what the reference says should happen."""

    action_id: str
    tool: str
    args: dict[str, Any]
    ok: bool
    result: Any
    error: str | None
    expected_ok: bool
    expected_error: str | None

    @property
    def matches(self) -> bool:
        if self.ok != self.expected_ok:
            return False
        return self.ok or self.error == self.expected_error


@dataclass(slots=True)
class TaskReport:
    """The replay of one task."""

    task_id: str
    calls: list[CallOutcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def call_tool(store: Store, name: str, args: dict[str, Any], call_id: str = "call") -> Any:
    """Validate ``args`` and call tool ``name`` synchronously with ``store`` as deps.

    Raises :class:`~tether.ToolError` when the tool refuses.
    """
    t = tool_named(name)
    validated = t.validate(args)
    kwargs = {key: getattr(validated, key) for key in type(validated).model_fields}
    if not t.takes_context:
        return t.fn(**kwargs)
    ctx = ToolContext(
        run_id="oracle",
        agent="support-desk-oracle",
        step=0,
        call_id=call_id,
        idempotency_key=f"oracle:{call_id}",
        deps=store,
    )
    return t.fn(ctx, **kwargs)


def strip_error_prefix(message: str | None) -> str | None:
    """``"ValueError: Order not found"`` -> ``"Order not found"``."""
    if message is None:
        return None
    head, sep, tail = message.partition(": ")
    return tail if sep and head.endswith("Error") else message


def normalise(value: Any) -> Any:
    """Drop null fields of mappings, recursively, so that null and absent compare equal."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def _field_differences(where: str, want: Any, got: Any) -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        diffs: list[str] = []
        for key in sorted(set(want) | set(got)):
            diffs += _field_differences(f"{where}.{key}", want.get(key), got.get(key))
        return diffs
    if want != got:
        return [f"{where}: expected {want!r}, got {got!r}"]
    return []


def compare_states(
    initial: Database, final: Database, changed: dict[str, dict[str, Any]]
) -> list[str]:
    """Differences between ``final`` and (``initial`` updated with ``changed``)."""
    problems: list[str] = []
    for table in TABLES:
        want_changed = changed.get(table, {})
        keys = set(initial.get(table, {})) | set(final.get(table, {})) | set(want_changed)
        for key in sorted(keys):
            want = want_changed[key] if key in want_changed else initial[table].get(key)
            got = final.get(table, {}).get(key)
            problems += _field_differences(f"{table}[{key}]", normalise(want), normalise(got))
    return problems


def compare_store(store: Store, changed: dict[str, dict[str, Any]]) -> list[str]:
    """Differences between ``store`` and db.json updated with ``changed``.

    Records whose stored text still equals their initial text and that are not in ``changed``
    are skipped without parsing, which keeps a full comparison to a few milliseconds.
    """
    initial = initial_docs()
    docs = store.dump_docs()
    problems: list[str] = []
    for table in TABLES:
        want_changed = changed.get(table, {})
        have, start = docs.get(table, {}), initial.get(table, {})
        for key in sorted(set(have) | set(start) | set(want_changed)):
            if key not in want_changed and have.get(key) == start.get(key):
                continue
            if key in want_changed:
                want = want_changed[key]
            else:
                want = None if key not in start else json.loads(start[key])
            got = None if key not in have else json.loads(have[key])
            problems += _field_differences(f"{table}[{key}]", normalise(want), normalise(got))
    return problems


def replay_task(task_id: str, store: Store | None = None) -> TaskReport:
    """Replay one task's ground-truth actions on ``store`` (default: a fresh copy)."""
    task = next(t for t in load_tasks() if t["id"] == task_id)
    expected = load_expected()[task_id]
    expected_by_id = {a["action_id"]: a for a in expected["actions"]}
    store = store if store is not None else Store.fresh()
    report = TaskReport(task_id)
    for action in task["evaluation_criteria"]["actions"]:
        want = expected_by_id[action["action_id"]]
        outcome = CallOutcome(
            action_id=action["action_id"],
            tool=action["name"],
            args=action["arguments"],
            ok=True,
            result=None,
            error=None,
            expected_ok=bool(want["ok"]),
            expected_error=strip_error_prefix(want.get("error")),
        )
        try:
            outcome.result = call_tool(
                store, action["name"], action["arguments"], want["action_id"]
            )
        except ToolError as exc:
            outcome.ok = False
            outcome.error = str(exc)
        report.calls.append(outcome)
        if not outcome.matches:
            report.problems.append(
                f"{outcome.action_id} {outcome.tool}: ok={outcome.ok} error={outcome.error!r}, "
                f"expected ok={outcome.expected_ok} error={outcome.expected_error!r}"
            )
    report.problems += compare_store(store, expected["changed"])
    return report


def replay_all(store: Store | None = None) -> list[TaskReport]:
    """Replay every task, each from the initial data (``store`` is reset before each task)."""
    store = store if store is not None else Store.fresh()
    reports = []
    for task in load_tasks():
        store.reset()
        reports.append(replay_task(task["id"], store))
    return reports


def main() -> None:
    """Print how many tasks reproduce their expected outcome."""
    reports = replay_all()
    for report in reports:
        if not report.ok:
            print(f"task {report.task_id}:")
            for problem in report.problems[:10]:
                print(f"  {problem}")
    matching = sum(r.ok for r in reports)
    print(f"{matching}/{len(reports)} tasks match their expected outcome")


if __name__ == "__main__":
    main()
