"""Location and loading of the τ²-bench retail data (read-only).

The data directory defaults to ``<repo>/../shared/data/tau2-retail`` and can be overridden with
the ``TETHER_TAU2_DIR`` environment variable. Parsed files are cached per process; callers get
the cached objects and must not mutate them (use :func:`copy.deepcopy` when needed).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

ENV_VAR = "TETHER_TAU2_DIR"

Record = dict[str, Any]
Database = dict[str, dict[str, Record]]

TABLES: tuple[str, ...] = ("products", "users", "orders")


def data_dir() -> Path:
    """The directory holding ``db.json``, ``tasks.json`` and ``expected_outcomes.json``."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override)
    repo = Path(__file__).resolve().parents[2]
    return (repo / ".." / "shared" / "data" / "tau2-retail").resolve()


def available() -> bool:
    """True when the data directory exists and holds ``db.json``."""
    return (data_dir() / "db.json").is_file()


@lru_cache(maxsize=4)
def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_db() -> Database:
    """The initial store (products, users, orders), parsed once per process. Do not mutate."""
    db: Database = _load_json(str(data_dir() / "db.json"))
    return db


def load_tasks() -> list[dict[str, Any]]:
    """The 114 tasks, in file order. Do not mutate."""
    tasks: list[dict[str, Any]] = _load_json(str(data_dir() / "tasks.json"))
    return tasks


def load_expected() -> dict[str, dict[str, Any]]:
    """Expected outcome per task id (``actions`` and ``changed``). Do not mutate."""
    outcomes: dict[str, Any] = _load_json(str(data_dir() / "expected_outcomes.json"))
    tasks: dict[str, dict[str, Any]] = outcomes["tasks"]
    return tasks


def load_policy_text() -> str:
    """The written retail policy (markdown)."""
    return (data_dir() / "policy.md").read_text(encoding="utf-8")
