"""Which agent code a process may import to continue a recorded run.

A run's row names the agent it was started with (``package.module:attribute``). Anyone who can
write to the store can change that name, and importing a module runs its code: ``os:abort``
would abort the approver's process, and a planted module could do anything with the approver's
rights. So continuing a run (``tether resume``, ``approve``, ``reject``, ``answer``, ``replay``)
imports a recorded reference only when the operator listed it in ``TETHER_AGENTS``
(comma-separated), or imports the one the operator names with ``--agent``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from tether.errors import UsageError

AGENTS_ENV = "TETHER_AGENTS"


def allowed_refs(env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The agent references the operator allows, from ``TETHER_AGENTS``."""
    raw = (os.environ if env is None else env).get(AGENTS_ENV, "")
    return frozenset(part.strip() for part in raw.split(",") if part.strip())


def recorded_ref(run_id: str, ref: str | None, env: Mapping[str, str] | None = None) -> str:
    """The run's recorded agent reference, if the operator allows importing it.

    Refuses (without importing anything) a run with no reference or one not in the allow-list,
    saying how to allow it.
    """
    if not ref:
        raise UsageError(
            f"run {run_id} was started from Python without an agent reference; "
            "pass the agent (--agent REF) to continue it"
        )
    if ref not in allowed_refs(env):
        raise UsageError(
            f"run {run_id} names agent {ref!r}, which is not an allowed agent: name the "
            f"agent's code with --agent REF, or add {ref!r} to {AGENTS_ENV} (comma-separated) "
            "if you trust it"
        )
    return ref
