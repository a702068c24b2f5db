"""Replay, fork and diff runs from their journals."""

from tether.replay.replayer import (
    DiffReport,
    ReplayReport,
    decisions,
    diff_runs,
    fork_run,
    replay_run,
)
from tether.replay.source import Divergence, JournalModel, Recording, ReplayTools

__all__ = [
    "DiffReport",
    "Divergence",
    "JournalModel",
    "Recording",
    "ReplayReport",
    "ReplayTools",
    "decisions",
    "diff_runs",
    "fork_run",
    "replay_run",
]
