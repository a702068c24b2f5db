"""The journal: hash-chained events and the store that keeps them."""

from tether.journal.events import (
    GENESIS,
    ChainProblem,
    Event,
    EventType,
    decision_in,
    make_event,
    proposal_in,
    request_in,
    verify_chain,
)
from tether.journal.store import ApprovalRecord, RunRecord, Store, args_hash, normalise_url

__all__ = [
    "GENESIS",
    "ApprovalRecord",
    "ChainProblem",
    "Event",
    "EventType",
    "RunRecord",
    "Store",
    "args_hash",
    "decision_in",
    "make_event",
    "normalise_url",
    "proposal_in",
    "request_in",
    "verify_chain",
]
