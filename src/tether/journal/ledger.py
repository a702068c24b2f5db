"""The run ledger: every run, chained in the order the runs were created.

Each run's own chain is anchored in its run row, but a run deleted whole (its row and its events)
leaves no trace there; its entry in the ledger does: the ledger's chain breaks at the gap, and
``tether verify --all`` names the missing run.
"""

from __future__ import annotations

import hashlib


def ledger_hash(prev: str, position: int, run_id: str) -> str:
    """SHA-256 of ``prev|position|run_id``: the hash of the ledger entry at ``position``."""
    return hashlib.sha256(f"{prev}|{position}|{run_id}".encode()).hexdigest()
