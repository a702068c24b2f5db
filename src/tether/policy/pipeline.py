"""The policy pipeline: rules → effect default → autonomy, then hard limits before execution.

Runtime side of the policy: it reads counters in the store, so authors never import it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tether.agent import Agent, Autonomy
from tether.journal.store import Reservation, Store
from tether.policy import binding
from tether.policy.rules import (
    Decision,
    DecisionKind,
    Limit,
    Proposal,
    Rule,
    VerdictKind,
    combine,
    default_decision,
)
from tether.tools import Effect


@dataclass(slots=True, frozen=True)
class Verdict:
    """A decision plus whether the call runs in shadow mode (journaled, never executed)."""

    decision: Decision
    shadow: bool = False

    @property
    def kind(self) -> VerdictKind:
        return VerdictKind.SHADOW if self.shadow else VerdictKind(self.decision.kind.value)


class PolicyEngine:
    """Decides proposed calls for one runtime; extra rules and limits apply to every agent."""

    def __init__(
        self,
        store: Store,
        *,
        rules: Sequence[Rule] = (),
        limits: Sequence[Limit] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.rules = list(rules)
        self.limits = list(limits)
        self.clock = clock
        # what a run started under this engine records (see tether.policy.binding)
        self.digest = binding.digest([*self.rules, *self.limits])
        self.sources = binding.sources([*self.rules, *self.limits])
        self._agent_digests: dict[int, tuple[Sequence[object], str]] = {}

    def record(self, agent: Agent) -> binding.PolicyRecord:
        """The policy a run of ``agent`` runs under: these rules and limits, and the agent's."""
        policy = agent.policy
        known = self._agent_digests.get(id(policy))
        if known is None or known[0] is not policy:
            if len(self._agent_digests) >= 256:
                self._agent_digests.clear()
            known = self._agent_digests[id(policy)] = (policy, binding.digest(policy))
        return binding.PolicyRecord(self.digest, self.sources, known[1])

    def _agent_rules(self, agent: Agent) -> tuple[list[Rule], list[Limit]]:
        if not agent.policy:  # nothing of the agent's own (the lists are only read)
            return self.rules, self.limits
        rules = [r for r in agent.policy if isinstance(r, Rule)] + self.rules
        limits = [lim for lim in agent.policy if isinstance(lim, Limit)] + self.limits
        return rules, limits

    def has_limits(self, agent: Agent) -> bool:
        """Whether any hard limit applies to this agent's calls (see :meth:`reserve_limits`)."""
        if self.limits:
            return True
        for p in agent.policy:  # noqa: SIM110 (most agents have none: no generator for any())
            if isinstance(p, Limit):
                return True
        return False

    def decide(self, agent: Agent, proposal: Proposal) -> Verdict:
        """Rules → effect default → the tool's autonomy (see docs/policy.md for the table).

        * A rule's ``deny`` or ``escalate`` always wins (the most severe rule decides).
        * A rule's ``approve`` pauses the call for a human.
        * A rule's ``allow`` (and no rule objecting) lets a read or a write run. An irreversible
          call still waits for a human unless the operator set the tool's autonomy to ``auto``:
          a rule can narrow what runs unattended, but only the operator widens it to actions
          that cannot be undone.
        * When no rule speaks, the effect decides: read and write run, irreversible waits for
          approval, unless the tool's autonomy is ``auto``.
        * Autonomy ``approve`` turns any call that would run into an approval; autonomy
          ``shadow`` journals any call that would run or wait, without executing it.
        """
        missing = _missing_scopes(agent, proposal)
        if missing is not None:  # no rule, approval or autonomy grants a permission
            return Verdict(missing)
        rules, _ = self._agent_rules(agent)
        decisions: list[Decision] = []
        for r in rules:
            try:
                d = r.evaluate(proposal)
            except Exception as exc:  # a broken rule must not let a call through
                d = Decision.escalate(f"rule {r.name} raised {type(exc).__name__}: {exc}").by(
                    r.name
                )
            if d is not None:
                decisions.append(d)
        autonomy = agent.autonomy.get(proposal.tool)
        level = None if autonomy is None else Autonomy(autonomy)
        if decisions:
            final = combine(decisions)
            if (
                final.kind is DecisionKind.ALLOW
                and proposal.effect is Effect.IRREVERSIBLE
                and level is not Autonomy.AUTO
            ):
                final = Decision(
                    DecisionKind.APPROVE,
                    f"rule {final.rule} allows it, but an irreversible action needs a human "
                    "unless the tool's autonomy is auto",
                    "effect-default",
                )
        elif level is Autonomy.AUTO and proposal.effect is Effect.IRREVERSIBLE:
            final = Decision(DecisionKind.ALLOW, "autonomy auto for this tool", "autonomy")
        else:
            final = default_decision(proposal.effect)
        if level is Autonomy.APPROVE and final.kind is DecisionKind.ALLOW:
            final = Decision(DecisionKind.APPROVE, "autonomy: every call is approved", "autonomy")
        if level is Autonomy.SHADOW and final.kind in (DecisionKind.ALLOW, DecisionKind.APPROVE):
            return Verdict(
                Decision(DecisionKind.ALLOW, "shadow mode: not executed", "autonomy"), shadow=True
            )
        return Verdict(final)

    def reserve_limits(
        self, agent: Agent, proposal: Proposal
    ) -> tuple[Decision | None, tuple[Reservation, ...]]:
        """Count the call against every matching limit; a refusal names the limit broken.

        Returns the refusal (or ``None``) and what was reserved: the engine gives that back with
        :meth:`release_limits` when the call fails, so only calls that ran count.

        Called just before execution (after any approval), so denied or rejected calls never
        consume a limit. Each counter update is one atomic conditional UPDATE in the store. The
        amount a ``max_total`` limit sums must be a finite number ≥ 0: anything else (a negative
        refund, ``NaN``, an amount that cannot be read) would lower or poison the total, so the
        call is refused instead.
        """
        _, limits = self._agent_rules(agent)
        matching = [lim for lim in limits if proposal.tool in lim.tools]
        if not matching:
            return None, ()
        now = self.clock()
        wanted = []
        for lim in matching:
            amount, bad = _amount(lim, proposal)
            if bad is not None:
                if lim.max_total is not None:
                    return Decision(lim.decision, f"limit {lim.name}: {bad}", lim.name), ()
                amount = 0.0  # a limit without max_total only counts calls
            window = int(now // lim.window_seconds) * lim.window_seconds
            wanted.append(
                Reservation(
                    lim.name,
                    f"{agent.name}|{lim.key(proposal)}",
                    window,
                    amount,
                    lim.max_count,
                    lim.max_total,
                )
            )
        refused = self.store.reserve_many(wanted)
        if refused is None:
            return None, tuple(wanted)
        lim, r = matching[refused], wanted[refused]
        count, total = self.store.counter(r.name, r.key, r.window_start)
        cap = (
            f"{count}/{lim.max_count} calls"
            if lim.max_count is not None and count + 1 > lim.max_count
            else f"{total:g}+{r.amount:g} > {lim.max_total:g}"
        )
        return Decision(lim.decision, f"limit {lim.name} reached ({cap})", lim.name), ()

    def release_limits(self, held: Sequence[Reservation]) -> None:
        """Give back what :meth:`reserve_limits` reserved for a call that failed."""
        self.store.release_many(held)


def _amount(lim: Limit, proposal: Proposal) -> tuple[float, str | None]:
    """The amount a call adds to a limit's total, or why it cannot be counted."""
    try:
        raw = lim.amount(proposal)
        amount = float(raw)
    except Exception as exc:  # fail closed: an amount that cannot be read never fits
        return 0.0, f"the amount cannot be read ({type(exc).__name__}: {exc})"
    if not math.isfinite(amount) or amount < 0:
        return 0.0, f"the amount must be a finite number >= 0, not {raw!r}"
    return amount, None


def _missing_scopes(agent: Agent, proposal: Proposal) -> Decision | None:
    """A denial when the tool needs a scope the run was not granted (``Runtime.run(scopes=)``)."""
    tool = agent.tool(proposal.tool)
    if tool is None or not tool.scopes:
        return None
    missing = sorted(set(tool.scopes) - proposal.scopes)
    if not missing:
        return None
    return Decision(
        DecisionKind.DENY,
        f"{tool.name} needs scope {', '.join(missing)}, which this run was not granted",
        "scopes",
    )
