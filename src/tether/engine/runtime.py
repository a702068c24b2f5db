"""The Runtime: start runs, resume them, and take human decisions.

store = Store("tether.db")
runtime = Runtime(store, model=ScriptedModel([...]))
result = await runtime.run(agent, "Where is my order #W123?")
if result.status == "waiting_approval":
    runtime.approve(approval_id, by="alice")
    result = await runtime.resume(result.run_id, agent)
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import importlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import orjson

from tether.agent import Agent
from tether.agent_refs import recorded_ref
from tether.engine.budget import BudgetGuard, CostEstimator
from tether.engine.context import RunContext
from tether.engine.edits import check_edit
from tether.engine.loop import drive
from tether.engine.result import RunResult, result_of
from tether.engine.state import RunState, RunStatus
from tether.engine.subscribers import RunEnded, installed_subscribers, notify
from tether.engine.switches import SwitchReader
from tether.errors import JournalCorrupted, JournalError, PolicyMismatch, UsageError
from tether.journal.chain import GENESIS, verify_chain
from tether.journal.events import (
    JOURNAL_FORMAT,
    AnswerKind,
    ApprovalRequested,
    Event,
    InputKind,
    InputReceived,
    InputRequested,
    RunFinished,
    RunResumed,
    RunStarted,
)
from tether.journal.leases import Lease, this_owner
from tether.journal.store import ApprovalRecord, RunRecord, Store
from tether.models.base import Model
from tether.policy.binding import EMPTY, PolicyRecord
from tether.policy.config import PolicyConfig, load_policy
from tether.policy.pipeline import PolicyEngine
from tether.policy.rules import Limit, Rule

ESTIMATED_OUTPUT_TOKENS = 256  # output tokens assumed for a call not made yet


def load_agent(ref: str) -> Agent:
    """Import ``module:attribute``; the attribute is an Agent or a function returning one."""
    if ":" not in ref:
        raise UsageError(f"agent reference {ref!r} must look like 'package.module:attribute'")
    module_name, attr = ref.split(":", 1)
    if os.getcwd() not in sys.path:  # like `python -m`, find modules of the current project
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import {module_name!r} for agent {ref!r}: {exc}") from exc
    try:
        obj = getattr(module, attr)
    except AttributeError as exc:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from exc
    if callable(obj) and not isinstance(obj, Agent):
        obj = obj()
    if not isinstance(obj, Agent):
        raise UsageError(f"{ref!r} is a {type(obj).__name__}, not a tether Agent")
    return obj


def rebuild_state(run_id: str, events: Sequence[Event], key: bytes | None = None) -> RunState:
    """Fold a run's journal into its state; a broken chain or row raises JournalCorrupted.

    ``key``: the journal key the run's chain is keyed with (see ``Store.chain_key``)."""
    problem = verify_chain(run_id, events, key)
    if problem is not None:
        raise JournalCorrupted(run_id, problem.seq, problem.reason)
    state = RunState(run_id=run_id, last_hash=GENESIS)
    for ev in events:
        try:
            state.apply(ev)
        except (KeyError, ValueError, TypeError) as exc:
            raise JournalCorrupted(run_id, ev.seq, f"cannot apply {ev.type}: {exc!r}") from exc
    return state


class Runtime:
    """Runs agents against a store. Embedded mode: runs execute in-process on asyncio."""

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        model: Model | str | None = None,
        deps: Any = None,
        rules: Sequence[Rule] = (),
        limits: Sequence[Limit] = (),
        clock: Callable[[], float] = time.time,
        estimate_cost: CostEstimator | None = None,
        requested_by: str | None = None,
        redactor: Any = None,
        prices: Any = None,
        subscribers: Sequence[RunEnded] | None = None,
    ) -> None:
        self.store = store if isinstance(store, Store) else Store(store)
        self.model = model
        self.deps = deps
        self.clock = clock
        self.policy = PolicyEngine(self.store, rules=rules, limits=limits, clock=clock)
        self.estimate_cost = estimate_cost
        self.requested_by = requested_by
        self.on_event: Callable[[Event], None] | None = None
        self.redactor = redactor if redactor is not None else _default_redactor()
        self.switches = SwitchReader(self.store)  # fresh kill-switch readings, shared by its runs
        self.replay: Any = None  # set by tether.replay to serve tools from a journal
        self.prices = prices  # a tether.models.pricing.PriceTable: cost of every call journaled
        # told of every run that ends (exporters); by default those installed packages configure,
        # e.g. OpenTelemetry when OTEL_EXPORTER_OTLP_ENDPOINT is set (see engine.subscribers)
        self.subscribers: list[RunEnded] = (
            installed_subscribers() if subscribers is None else list(subscribers)
        )

    # -- model and deps ------------------------------------------------------------------------

    def _model_for(self, agent: Agent, override: Model | str | None) -> Model:
        choice = override or self.model or agent.model
        if choice is not None and not isinstance(choice, str):
            model: Model = choice
        else:
            from tether.models.resolve import resolve_model

            model = resolve_model(choice)
        if self.prices is not None:
            from tether.models.pricing import PricedModel

            model = PricedModel(model, self.prices)
        return model

    def _deps_for(self, agent: Agent) -> Any:
        if self.deps is not None:
            return self.deps
        factory = getattr(agent, "deps_factory", None)
        return factory() if callable(factory) else None

    def _context(
        self, agent: Agent, state: RunState, model: Model, policy: PolicyEngine | None = None
    ) -> RunContext:
        return RunContext(
            store=self.store,
            agent=agent,
            model=model,
            policy=self.policy if policy is None else policy,
            state=state,
            deps=self._deps_for(agent),
            clock=self.clock,
            on_event=self.on_event,
            redact=None if self.redactor is None else self.redactor.redact,
            redact_check=getattr(self.redactor, "json_may_change", None),
            replay=self.replay,
            simulate_side_effects=self.replay is not None,
            switches=self.switches,
        )

    # -- runs ------------------------------------------------------------------------------------

    async def run(
        self,
        agent: Agent,
        input: Any,
        *,
        run_id: str | None = None,
        agent_ref: str | None = None,
        model: Model | str | None = None,
        scopes: Iterable[str] = (),
    ) -> RunResult:
        """Start a run and drive it until it finishes or waits for a human.

        ``scopes``: the permissions the run is granted, for tools declared with
        ``@tool(scopes=...)``. They are journaled with the run's start, so a resume or a replay
        runs with the same grant."""
        if isinstance(scopes, str):
            scopes = (scopes,)
        if input is None or (isinstance(input, str) and not input.strip()):
            raise UsageError("a run needs a non-empty input")
        _check_json(input)
        chosen = self._model_for(agent, model)
        run_id = run_id or secrets.token_hex(16)  # 128 random bits, as a uuid4's hex
        now = self.clock()
        snapshot = agent.snapshot()
        fingerprint = agent.fingerprint(snapshot)
        state = RunState(run_id=run_id, last_hash=GENESIS)
        ctx = self._context(agent, state, chosen)
        # the run's first lease comes with its row: this process drives it from the start
        ctx.lease = Lease(run_id, this_owner(), 1)
        started = RunStarted(
            agent=snapshot,  # its instructions are the system prompt
            fingerprint=fingerprint,
            input=input,
            model=chosen.name,
            agent_ref=agent_ref,
            # the rules and limits it runs under: every resume must run under the same
            policy=self.policy.record(agent).to_dict(),
            scopes=tuple(sorted(set(scopes))),
            format=JOURNAL_FORMAT,
        )
        ctx.emit(started)
        # the row and the first event land together: a run never exists without its start
        ctx.start(
            RunRecord(
                id=run_id,
                agent=agent.name,
                agent_version=agent.version,
                agent_ref=agent_ref,
                status=RunStatus.RUNNING.value,
                input=state.run_input,  # as journaled: redacted
                output=None,
                reason=None,
                model=chosen.name,
                steps=0,
                input_tokens=0,
                output_tokens=0,
                cost_usd=0.0,
                parent_run_id=None,
                fork_step=None,
                requested_by=self.requested_by or _whoami(),
                created_at=now,
                updated_at=now,
            )
        )
        return await self._drive(ctx)

    async def _drive(self, ctx: RunContext) -> RunResult:
        limits = ctx.agent.limits
        estimate = self.estimate_cost
        if estimate is None and self.prices is not None:
            from tether.models.pricing import cost_estimator

            estimate = cost_estimator(ctx.model.name, ESTIMATED_OUTPUT_TOKENS, self.prices)
        guard = BudgetGuard(limits, estimate_cost=estimate, agent=ctx.agent.name, spend=self.store)
        lease = ctx.lease
        keeper = None if self.store.in_memory else self.store.lease_keeper  # (one connection)
        if lease is not None and keeper is not None:
            keeper.hold(lease)
        try:
            await drive(ctx, guard)
        finally:
            if lease is not None:
                if keeper is not None:
                    keeper.drop(lease)
                if not ctx.journal.released:  # (the last write gives it up, as a rule)
                    await ctx.io(self._release, lease)
        if ctx.state.status.terminal and self.subscribers:
            await asyncio.to_thread(notify, self.subscribers, self.store, ctx.state.run_id)
        return result_of(ctx.state)

    def subscribe(self, subscriber: RunEnded) -> None:
        """Have ``subscriber(store, run_id)`` called whenever a run of this runtime ends."""
        self.subscribers.append(subscriber)

    def _release(self, lease: Lease) -> None:
        """Give a run's lease up once this process stops driving it (waiting, finished or
        failed). A store that is down at that moment only delays the next driver until the
        lease expires."""
        with contextlib.suppress(JournalError):
            self.store.release_lease(lease)

    @contextlib.contextmanager
    def _leased(self, run_id: str) -> Iterator[Lease]:
        """Hold run ``run_id``'s lease for a short write (an answer, a cancellation)."""
        lease = self.store.acquire_lease(run_id, this_owner())
        try:
            yield lease
        finally:
            self._release(lease)

    def load_state(self, run_id: str) -> tuple[RunRecord, RunState]:
        record = self.store.get_run(run_id)
        key = self.store.chain_key(record.id)
        return record, rebuild_state(record.id, self.store.events(record.id), key)

    async def resume(
        self, run_id: str, agent: Agent | None = None, *, model: Model | str | None = None
    ) -> RunResult:
        """Continue a run from its journal. Recorded responses and results are never redone.

        This process first takes the run's lease: a run another live process is driving is
        refused with :class:`~tether.errors.RunLeased` (see :mod:`tether.journal.leases`)."""
        lease = self.store.acquire_lease(self.store.get_run(run_id).id, this_owner())
        try:
            return await self._resume(lease, agent, model)
        finally:
            self._release(lease)

    async def _resume(
        self, lease: Lease, agent: Agent | None, model: Model | str | None
    ) -> RunResult:
        record, state = self.load_state(lease.run_id)
        if state.last_seq == 0:
            raise JournalCorrupted(record.id, 1, "the run has no events (it never started)")
        if state.status.terminal:
            return result_of(state)
        if agent is None:  # only a reference the operator allows is imported
            agent = load_agent(recorded_ref(record.id, record.agent_ref))
        if agent.name != record.agent:
            raise UsageError(
                f"run {record.id} belongs to agent {record.agent!r}, not {agent.name!r}"
            )
        policy, recorded = self.policy_for(record.id)
        ctx = self._context(agent, state, self._model_for(agent, model), policy)
        ctx.lease = lease
        waiting = state.waiting_for
        if isinstance(waiting, InputRequested):
            if waiting.kind is InputKind.IN_DOUBT:  # an idempotent call that timed out: again
                ctx.emit(InputReceived(kind=AnswerKind.RETRY))
            elif waiting.kind is not InputKind.PAUSED:
                return result_of(state)  # needs `tether answer`
            elif self.store.paused(agent.name)[0]:
                return result_of(state)
            else:
                ctx.emit(InputReceived(kind=AnswerKind.UNPAUSED))
        if isinstance(waiting, ApprovalRequested):
            approval = self.store.get_approval(waiting.approval_id)
            if approval.status == "pending":
                return result_of(state)
        ctx.emit(
            RunResumed(
                fingerprint=agent.fingerprint(),
                same_agent=agent.has_fingerprint(state_fingerprint(self.store, record.id)),
                # the agent's own rules are rebuilt from its code: a change is noted here
                same_policy=recorded is None
                or policy.record(agent).agent_digest == recorded.agent_digest,
            )
        )
        return await self._drive(ctx)

    def policy_for(self, run_id: str) -> tuple[PolicyEngine, PolicyRecord | None]:
        """The policy engine to continue run ``run_id`` with, and the policy it recorded.

        The runtime's own rules and limits when they are the ones the run started under; when
        this runtime has none, the policy files the run recorded, if their content still hashes
        the same. Otherwise :class:`~tether.errors.PolicyMismatch`: continuing would drop or
        change rules and limits the run was promised.
        """
        started = run_started(self.store, run_id)
        recorded = PolicyRecord.from_dict(started.policy) if started else None
        return bind_policy(self.policy, recorded, run_id), recorded

    # -- human decisions -------------------------------------------------------------------------

    def approve(
        self,
        approval_id: str,
        *,
        by: str | None = None,
        edit: dict[str, Any] | None = None,
        reason: str | None = None,
        four_eyes: bool = False,
        agent: Agent | None = None,
    ) -> ApprovalRecord:
        """Approve a pending call (optionally with edited arguments). Resume the run after.

        Edited arguments are checked before anything is recorded: against the tool's schema
        and, as a dry run, against the policy the run started under (``agent``: the run's agent,
        by default imported from its agent reference). An edit either refuses raises
        :class:`~tether.errors.InvalidEdit` with the reason and leaves the approval pending.
        """
        who = by or _whoami()
        record = self.store.get_approval(approval_id)
        if four_eyes:
            requester = self.store.get_run(record.run_id).requested_by
            if requester == who:
                raise UsageError(
                    f"four-eyes rule: {who} started run {record.run_id} and cannot "
                    "approve its calls"
                )
        if edit is not None:
            if agent is None:
                run = self.store.get_run(record.run_id)
                if not run.agent_ref:
                    raise UsageError(
                        f"run {run.id} was started from Python without an agent reference; "
                        "pass the agent to check the edited arguments"
                    )
                agent = load_agent(recorded_ref(run.id, run.agent_ref))
            policy, _ = self.policy_for(record.run_id)
            _, state = self.load_state(record.run_id)
            check_edit(record, edit, agent, policy, state, self._deps_for(agent))
        status = "approved" if edit is None else "edited"
        return self.store.decide_approval(
            record.id, status=status, decided_by=who, reason=reason, edited_args=edit
        )

    def reject(self, approval_id: str, *, reason: str, by: str | None = None) -> ApprovalRecord:
        """Reject a pending call; the reason goes back to the model when the run resumes."""
        if not reason.strip():
            raise UsageError("a rejection needs a reason the agent can act on")
        return self.store.decide_approval(
            approval_id, status="rejected", decided_by=by or _whoami(), reason=reason
        )

    def answer(self, run_id: str, text: str, *, by: str | None = None) -> None:
        """Record a human's answer to a run waiting for input. Resume the run after."""
        if not text.strip():
            raise UsageError("the answer is empty")
        with self._leased(self.store.get_run(run_id).id) as lease:
            self._answer(lease, text, by)

    def _answer(self, lease: Lease, text: str, by: str | None) -> None:
        record, state = self.load_state(lease.run_id)
        if state.status is not RunStatus.WAITING_INPUT:
            raise UsageError(f"run {record.id} is {state.status.value}, not waiting for input")
        waiting = state.waiting_for
        if isinstance(waiting, InputRequested) and waiting.kind is InputKind.PAUSED:
            raise UsageError(f"run {record.id} waits for its agent to be unpaused, not an answer")
        ctx = RunContext(
            self.store, _placeholder_agent(record), _NoModel(), self.policy, state, clock=self.clock
        )
        ctx.lease = lease
        ctx.emit(InputReceived(kind=AnswerKind.ANSWER, answer=text, by=by or _whoami()))
        ctx.flush_now(final=True)

    def cancel(self, run_id: str, *, reason: str, by: str | None = None) -> None:
        """Cancel a run that has not finished."""
        with self._leased(self.store.get_run(run_id).id) as lease:
            self._cancel(lease, reason, by)

    def _cancel(self, lease: Lease, reason: str, by: str | None) -> None:
        record, state = self.load_state(lease.run_id)
        if state.status.terminal:
            raise UsageError(f"run {record.id} already ended ({state.status.value})")
        ctx = RunContext(
            self.store, _placeholder_agent(record), _NoModel(), self.policy, state, clock=self.clock
        )
        ctx.lease = lease
        ctx.emit(RunFinished(status=RunStatus.CANCELLED, reason=f"{reason} (by {by or _whoami()})"))
        ctx.flush_now(final=True)
        notify(self.subscribers, self.store, record.id)

    # -- sync conveniences -----------------------------------------------------------------------

    def run_sync(self, agent: Agent, input: Any, **kwargs: Any) -> RunResult:
        return asyncio.run(self.run(agent, input, **kwargs))

    def resume_sync(self, run_id: str, agent: Agent | None = None, **kwargs: Any) -> RunResult:
        return asyncio.run(self.resume(run_id, agent, **kwargs))


def bind_policy(engine: PolicyEngine, recorded: PolicyRecord | None, run_id: str) -> PolicyEngine:
    """``engine`` if its rules and limits are the ones run ``run_id`` recorded; if it has none,
    an engine on the recorded policy files when their content still hashes the same; otherwise
    :class:`~tether.errors.PolicyMismatch` (see :meth:`Runtime.policy_for`)."""
    if recorded is None or recorded.digest == engine.digest:
        return engine
    files = ", ".join(recorded.sources) or "rules and limits given in Python"
    if not engine.rules and not engine.limits and recorded.sources:
        try:
            config = sum((load_policy(f) for f in recorded.sources), PolicyConfig())
        except UsageError as exc:
            raise PolicyMismatch(
                f"run {run_id} was started under policy {recorded.digest} ({files}), which "
                f"cannot be loaded again: {exc}; pass --policy FILE with that content"
            ) from None
        loaded = PolicyEngine(
            engine.store, rules=config.rules, limits=config.limits, clock=engine.clock
        )
        if loaded.digest == recorded.digest:
            return loaded
        raise PolicyMismatch(
            f"run {run_id} was started under policy {recorded.digest} ({files}); the file "
            f"now hashes {loaded.digest}: pass --policy FILE with the content the run "
            "started with"
        )
    mine = ", ".join(engine.sources) or (
        "no policy" if engine.digest == EMPTY else "rules and limits given in Python"
    )
    raise PolicyMismatch(
        f"run {run_id} was started under policy {recorded.digest} ({files}); this process "
        f"has {engine.digest} ({mine}): pass --policy FILE with the content the run "
        "started with"
    )


def _check_json(value: Any) -> None:
    """Refuse a run input that JSON cannot hold (orjson first: it is several times faster)."""
    try:
        orjson.dumps(value)
    except TypeError:
        try:  # what orjson refuses but the standard library takes (integers beyond 64 bits)
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"run input must be JSON-serialisable: {exc}") from exc


_redactors: dict[tuple[str, str], Any] = {}
# (id of a redactor, agent fingerprint) -> (that redactor, whether the snapshot is clean)


def _default_redactor() -> Any:
    """Secrets are always masked; PII kinds come from ``TETHER_REDACT``.

    One redactor per configuration is kept for the process (building one compiles its patterns;
    a redactor is safe to share)."""
    config = (os.environ.get("TETHER_REDACT", ""), os.environ.get("TETHER_REDACT_PATTERNS", ""))
    redactor = _redactors.get(config)
    if redactor is None:
        try:
            from tether.journal.redaction import Redactor
        except ImportError:
            return None
        redactor = _redactors[config] = Redactor.from_env()
    return redactor


def run_started(store: Store, run_id: str) -> RunStarted | None:
    """The ``run_started`` event of a run (``None``: the run has no events)."""
    first = store.events(run_id)[:1]
    data = first[0].data if first else None
    return data if isinstance(data, RunStarted) else None


def state_fingerprint(store: Store, run_id: str) -> str:
    started = run_started(store, run_id)
    return started.fingerprint if started else ""


_users: list[str] = []


def _whoami() -> str:
    """The operating-system user (``getpass.getuser``), looked up once per process."""
    if not _users:
        try:
            _users.append(getpass.getuser())
        except Exception:
            _users.append("unknown")
    return _users[0]


def _placeholder_agent(record: RunRecord) -> Agent:
    return Agent(name=record.agent, instructions="", version=record.agent_version)


class _NoModel:
    name = "none"

    async def request(self, request: Any) -> Any:
        raise UsageError("no model in this context")
