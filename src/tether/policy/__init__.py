"""Policy: rules, decisions and limits checked on every proposed tool call."""

from tether.policy.config import PolicyConfig, load_policy
from tether.policy.rules import (
    CallOutcome,
    Decision,
    DecisionKind,
    Limit,
    PastCall,
    Proposal,
    Rule,
    arg_rule,
    combine,
    default_decision,
    rule,
)

__all__ = [
    "CallOutcome",
    "Decision",
    "DecisionKind",
    "Limit",
    "PastCall",
    "PolicyConfig",
    "Proposal",
    "Rule",
    "arg_rule",
    "combine",
    "default_decision",
    "load_policy",
    "rule",
]
