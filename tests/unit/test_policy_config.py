"""Policy files: TOML and YAML parsing, each rule kind, limits in a real run, and each error."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tether import Agent, Limits, ScriptedModel, call, tool
from tether.engine import Runtime
from tether.errors import UsageError
from tether.journal import Store
from tether.policy import DecisionKind, Limit, Proposal, Rule
from tether.policy.config import PolicyConfig, load_policy, parse_policy, parse_window
from tether.tools import Effect

FULL_TOML = """
[[limit]]
name = "refunds-per-customer"
tools = ["return_delivered_order_items", "refund"]
per = "user_id"
max_count = 3
window = "1d"

[[limit]]
name = "refund-dollars-per-agent"
tools = ["refund"]
amount = "amount"
max_total = 500
window = "1d"

[[rule]]
name = "refund-cap"
tool = "refund"
arg = "amount"
max = 200
decision = "deny"
reason = "refunds over $200 need a supervisor"
"""

FULL_YAML = """
limit:
  - name: refunds-per-customer
    tools: [return_delivered_order_items, refund]
    per: user_id
    max_count: 3
    window: 1d
  - name: refund-dollars-per-agent
    tools: [refund]
    amount: amount
    max_total: 500
    window: 1d
rule:
  - name: refund-cap
    tool: refund
    arg: amount
    max: 200
    decision: deny
    reason: refunds over $200 need a supervisor
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def proposal(tool_name: str = "refund", **args: Any) -> Proposal:
    return Proposal(tool=tool_name, effect=Effect.WRITE, args=args, agent="a", run_id="r")


def decide(r: Rule, tool_name: str = "refund", **args: Any) -> str | None:
    d = r.evaluate(proposal(tool_name, **args))
    return None if d is None else d.kind.value


def one_rule(**entry: Any) -> Rule:
    base: dict[str, Any] = {"name": "r", "tool": "refund", "arg": "x", "reason": "no"}
    cfg = parse_policy({"rule": [{**base, **entry}]})
    assert len(cfg.rules) == 1 and cfg.limits == []
    return cfg.rules[0]


def error(data: Any) -> str:
    with pytest.raises(UsageError) as info:
        parse_policy(data, "ops/policy.toml")
    return str(info.value)


# -- both formats ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [("policy.toml", FULL_TOML), ("policy.yaml", FULL_YAML), ("policy.yml", FULL_YAML)],
)
def test_full_example_parses_the_same_in_both_formats(tmp_path: Path, name: str, text: str) -> None:
    cfg = load_policy(write(tmp_path, name, text))
    assert isinstance(cfg, PolicyConfig) and cfg.source.endswith(name)
    per_customer, dollars = cfg.limits
    assert isinstance(per_customer, Limit)
    assert per_customer.name == "refunds-per-customer"
    assert per_customer.tools == frozenset({"return_delivered_order_items", "refund"})
    assert per_customer.max_count == 3 and per_customer.max_total is None
    assert per_customer.window_seconds == 86_400 and per_customer.decision is DecisionKind.DENY
    assert per_customer.key(proposal(user_id="u7")) == "user_id=u7"
    assert per_customer.key(proposal(user_id="u8")) != per_customer.key(proposal(user_id="u7"))
    assert dollars.max_total == 500.0 and dollars.max_count is None
    assert dollars.key(proposal(amount=1)) == dollars.key(proposal(amount=2))  # one per agent
    assert dollars.amount(proposal(amount=120.5)) == 120.5
    (cap,) = cfg.rules
    assert cap.name == "refund-cap" and cap.tools == frozenset({"refund"})
    assert decide(cap, amount=200) is None
    assert decide(cap, amount=200.01) == "deny"
    assert decide(cap, "other_tool", amount=10_000) is None
    d = cap.evaluate(proposal(amount=500))
    assert d is not None and d.reason == "refunds over $200 need a supervisor"
    assert d.rule == "refund-cap"


def test_empty_files_give_an_empty_policy(tmp_path: Path) -> None:
    for name in ("empty.toml", "empty.yaml"):
        cfg = load_policy(write(tmp_path, name, ""))
        assert cfg.rules == [] and cfg.limits == []


def test_policies_add_up(tmp_path: Path) -> None:
    a = load_policy(write(tmp_path, "a.toml", FULL_TOML))
    b = parse_policy({"rule": [{"name": "x", "tool": "t", "arg": "a", "max": 1, "reason": "r"}]})
    both = a + b
    assert [r.name for r in both.rules] == ["refund-cap", "x"] and len(both.limits) == 2


# -- each rule kind ----------------------------------------------------------------------------


def test_max_rule() -> None:
    r = one_rule(max=10)
    assert decide(r, x=10) is None and decide(r, x=-3) is None
    assert decide(r, x=10.5) == "deny"


def test_min_rule() -> None:
    r = one_rule(min=1)
    assert decide(r, x=1) is None and decide(r, x=0) == "deny"


def test_min_and_max_make_a_range() -> None:
    r = one_rule(min=1, max=5)
    assert [decide(r, x=v) for v in (0, 1, 5, 6)] == ["deny", None, None, "deny"]


def test_one_of_rule() -> None:
    r = one_rule(one_of=["card", "gift_card"])
    assert decide(r, x="card") is None
    assert decide(r, x="paypal") == "deny"


def test_not_one_of_rule() -> None:
    r = one_rule(not_one_of=["admin", "root"])
    assert decide(r, x="alice") is None
    assert decide(r, x="root") == "deny"
    assert decide(r) is None  # a missing value is not in the list


def test_pattern_rule_matches_the_whole_value() -> None:
    r = one_rule(pattern=r"#W\d{7}")
    assert decide(r, x="#W1234567") is None
    assert decide(r, x="#W1234567-extra") == "deny"
    assert decide(r, x="x#W1234567") == "deny"


@pytest.mark.parametrize("value", [None, "150", True, [1], math.nan])
def test_rules_fail_closed_on_values_they_cannot_compare(value: Any) -> None:
    r = one_rule(max=200)
    assert decide(r, x=value) == "deny"
    assert decide(r) == "deny"  # argument missing
    assert decide(one_rule(pattern=".*"), x=3) == "deny"


@pytest.mark.parametrize("kind", ["deny", "escalate", "approve"])
def test_rule_decisions(kind: str) -> None:
    r = one_rule(max=1, decision=kind)
    assert decide(r, x=2) == kind and decide(r, x=1) is None


def test_rule_decision_defaults_to_deny() -> None:
    assert decide(one_rule(max=1), x=2) == "deny"


# -- limits ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("2h", 7_200), ("1d", 86_400), (" 7d ", 604_800)],
)
def test_windows(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds
    cfg = parse_policy({"limit": [{"name": "l", "tools": ["t"], "max_count": 1, "window": text}]})
    assert cfg.limits[0].window_seconds == seconds


def test_limit_per_argument_keys_by_json_for_non_strings() -> None:
    cfg = parse_policy(
        {"limit": [{"name": "l", "tools": ["t"], "per": "n", "max_count": 1, "window": "1h"}]}
    )
    key = cfg.limits[0].key
    assert key(proposal(n=7)) == "n=7" and key(proposal(n="7")) == "n=7"
    assert key(proposal(n={"b": 1, "a": 2})) == 'n={"a": 2, "b": 1}'
    assert key(proposal()) == "n=<missing>"


def test_limit_amount_fails_closed() -> None:
    cfg = parse_policy(
        {
            "limit": [
                {
                    "name": "l",
                    "tools": ["t"],
                    "amount": "usd",
                    "max_total": 50,
                    "window": "1d",
                    "decision": "escalate",
                }
            ]
        }
    )
    lim = cfg.limits[0]
    assert lim.decision is DecisionKind.ESCALATE
    assert lim.amount(proposal(usd=12)) == 12.0
    # an amount that is not a number cannot be counted: the limit refuses the call
    for args in ({"usd": "12"}, {}, {"usd": math.nan}, {"usd": True}):
        with pytest.raises(ValueError, match="not a number"):
            lim.amount(proposal(**args))


@pytest.mark.parametrize("attached_to", ["runtime", "agent"])
async def test_loaded_policy_enforces_in_a_run(tmp_path: Path, attached_to: str) -> None:
    executed: list[float] = []

    @tool(effect="write")
    def refund(user_id: str, amount: float) -> str:
        """Refund money."""
        executed.append(amount)
        return "refunded"

    cfg = load_policy(write(tmp_path, "policy.yaml", FULL_YAML))
    calls = [("u1", 250), ("u1", 100), ("u1", 150), ("u1", 200), ("u1", 10), ("u2", 60), ("u2", 50)]
    script: list[Any] = [call("refund", user_id=u, amount=a) for u, a in calls]
    store = Store(str(tmp_path / "t.db"))
    try:
        on_agent = attached_to == "agent"
        agent = Agent(
            name="desk",
            instructions="x",
            tools=[refund],
            limits=Limits(max_consecutive_failures=10),
            policy=[*cfg.rules, *cfg.limits] if on_agent else [],
        )
        model = ScriptedModel([*script, "done"])
        rt = (
            Runtime(store, model=model)
            if on_agent
            else Runtime(store, model=model, rules=cfg.rules, limits=cfg.limits)
        )
        result = await rt.run(agent, "go")
        assert result.ok
        # 250 breaks refund-cap (and is never counted); u1's fourth refund breaks the per-customer
        # count; u2's 60 would take the agent to $510; 50 takes it to exactly $500
        assert executed == [100, 150, 200, 50]
        denials = [
            e.payload["rule"]
            for e in store.events(result.run_id)
            if e.type == "policy_decision" and e.payload["decision"] == "deny"
        ]
        assert denials == ["refund-cap", "refunds-per-customer", "refund-dollars-per-agent"]
    finally:
        store.close()


# -- errors ------------------------------------------------------------------------------------


def test_unknown_key_in_an_entry_names_file_entry_and_key() -> None:
    msg = error(
        {
            "limit": [
                {"name": "ok", "tools": ["t"], "max_count": 1, "window": "1d"},
                {"name": "per-day", "tools": ["t"], "max_cuont": 3, "window": "1d"},
            ]
        }
    )
    assert msg.startswith("ops/policy.toml:")
    assert "limit #2 ('per-day')" in msg and "unknown key 'max_cuont'" in msg
    assert "did you mean 'max_count'" in msg


def test_unknown_top_level_key() -> None:
    msg = error({"limits": []})
    assert "unknown key 'limits'" in msg and "`limit` and `rule`" in msg


@pytest.mark.parametrize("window", ["1 day", "1w", "0s", "-5m", "5", 86400])
def test_bad_window(window: Any) -> None:
    msg = error({"limit": [{"name": "daily", "tools": ["t"], "max_count": 1, "window": window}]})
    assert "limit #1 ('daily')" in msg and "window" in msg


def test_missing_window() -> None:
    msg = error({"limit": [{"name": "daily", "tools": ["t"], "max_count": 1}]})
    assert "limit #1 ('daily')" in msg and "window: Field required" in msg


@pytest.mark.parametrize("decision", ["block", "allow", "DENY", 1])
def test_bad_rule_decision(decision: Any) -> None:
    msg = error(
        {
            "rule": [
                {
                    "name": "cap",
                    "tool": "t",
                    "arg": "a",
                    "max": 1,
                    "reason": "r",
                    "decision": decision,
                }
            ]
        }
    )
    assert "rule #1 ('cap')" in msg and "decision" in msg


def test_limits_cannot_wait_for_approval() -> None:
    msg = error(
        {
            "limit": [
                {"name": "l", "tools": ["t"], "max_count": 1, "window": "1d", "decision": "approve"}
            ]
        }
    )
    assert "limit #1 ('l')" in msg and "'deny' or 'escalate'" in msg and "'approve'" in msg


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({}, "a limit needs max_count, max_total or both"),
        ({"max_total": 10}, "max_total needs amount"),
        ({"max_count": 1, "amount": "usd"}, "amount is only used with max_total"),
        ({"max_count": -1}, "max_count: Input should be greater than or equal to 0"),
        ({"max_count": 2.5}, "max_count: Input should be a valid integer"),
        ({"max_count": "3"}, "max_count: Input should be a valid integer"),
        ({"max_count": 1, "tools": []}, "tools: List should have at least 1 item"),
        ({"max_count": 1, "tools": "refund"}, "tools: Input should be a valid list"),
    ],
)
def test_bad_limits(entry: dict[str, Any], problem: str) -> None:
    msg = error({"limit": [{"name": "l", "tools": ["t"], "window": "1d", **entry}]})
    assert "limit #1 ('l')" in msg and problem in msg


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({}, "a rule needs at least one check"),
        ({"max": 1, "min": 2}, "min (2.0) is greater than max (1.0)"),
        ({"pattern": "(unclosed"}, "not a valid regular expression"),
        ({"one_of": []}, "one_of: List should have at least 1 item"),
        ({"max": "200"}, "max: Input should be a valid number"),
        ({"max": 1, "reason": ""}, "reason: String should have at least 1 character"),
    ],
)
def test_bad_rules(entry: dict[str, Any], problem: str) -> None:
    msg = error({"rule": [{"name": "r", "tool": "t", "arg": "a", "reason": "why", **entry}]})
    assert "rule #1 ('r')" in msg and problem in msg


def test_entry_without_a_name_is_named_by_position() -> None:
    msg = error({"rule": [{"tool": "t", "arg": "a", "max": 1, "reason": "r"}]})
    assert "rule #1:" in msg and "name: Field required" in msg


def test_duplicate_names() -> None:
    entry = {"name": "cap", "tool": "t", "arg": "a", "max": 1, "reason": "r"}
    msg = error({"rule": [entry, entry]})
    assert "rule #2 ('cap')" in msg and "unique" in msg


def test_every_problem_is_reported_at_once() -> None:
    msg = error(
        {
            "limit": [{"name": "a", "tools": ["t"], "max_count": 1, "window": "1y"}],
            "rule": [
                {"name": "b", "tool": "t", "arg": "a", "max": 1, "reason": "r", "decision": "nope"}
            ],
        }
    )
    assert "limit #1 ('a')" in msg and "rule #1 ('b')" in msg


def test_file_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"list\.yaml: the file must be a mapping"):
        load_policy(write(tmp_path, "list.yaml", "- a\n- b\n"))


def test_bad_toml_syntax_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"bad\.toml: not valid TOML"):
        load_policy(write(tmp_path, "bad.toml", "[[limit]\nname = 1\n"))


def test_bad_yaml_syntax_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"bad\.yaml: not valid YAML"):
        load_policy(write(tmp_path, "bad.yaml", "limit: [unclosed\n"))


def test_errors_from_a_file_name_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ops.toml",
        '[[rule]]\nname = "r"\ntool = "t"\narg = "a"\nmax = 1\nreason = "x"\ndecision = "maybe"\n',
    )
    with pytest.raises(UsageError) as info:
        load_policy(path)
    assert str(info.value).startswith(f"{path}:") and "rule #1 ('r')" in str(info.value)


def test_unsupported_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"must end in \.toml, \.yaml or \.yml"):
        load_policy(write(tmp_path, "policy.json", "{}"))
    with pytest.raises(UsageError, match="policy file not found"):
        load_policy(tmp_path / "nowhere.toml")
