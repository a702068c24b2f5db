"""The run ledger: every run, chained in the order the runs were created.

Each run's own chain is anchored in its run row, but a run deleted whole (its row and its events)
leaves no trace there; its entry in the ledger does: the ledger's chain breaks at the gap, and
``tether verify --all`` names the missing run.

A run journaled under a key (``TETHER_JOURNAL_KEY``) gets a keyed entry: an HMAC under that key.
So the ``keyed`` flag of its run row cannot be cleared, and its events rehashed without the key,
unnoticed: its entry would no longer verify, and an entry rewritten without the key would break
the entries after it (once a keyed entry exists, every later one must be keyed too).
"""

from __future__ import annotations

import hashlib
import hmac


def ledger_hash(prev: str, position: int, run_id: str, key: bytes | None = None) -> str:
    """SHA-256 (HMAC-SHA-256 under ``key``) of ``prev|position|run_id``: the hash of the ledger
    entry at ``position``."""
    message = f"{prev}|{position}|{run_id}".encode()
    if key is None:
        return hashlib.sha256(message).hexdigest()
    return hmac.new(key, message, hashlib.sha256).hexdigest()
