"""Exceptions, split by audience.

    TetherError                      base of everything tether raises
    ├── UsageError                   the caller did something wrong (bad agent, input, CLI use)
    │   ├── NotFound                 a run, approval or event that does not exist
    │   ├── InvalidEdit              edited arguments the tool or the policy refuses
    │   └── PolicyMismatch           a run resumed under another policy than it started with
    ├── ModelError                   a model call failed (carries ``retryable`` and ``retry_after``)
    │   ├── ModelTimeout
    │   └── CircuitOpen              refused without a call: the provider's circuit is open
    ├── JournalError                 the journal cannot be read or written
    │   ├── JournalCorrupted         an event fails to decode or breaks the hash chain
    │   ├── JournalConflict          another writer appended to the run first (nothing written)
    │   ├── StoreUnavailable         the store stayed down or locked through every retry
    │   ├── RunLeased                another live process is driving the run (its lease holds)
    │   └── LeaseLost                this process's lease on a run was taken over: it must stop
    ├── ReplayDivergence             a replay asked for something the recording does not have
    └── RunError                     a run ended badly; carries the run id and its final status

Errors that steer a run (invalid arguments, denied calls) are not exceptions: they are journaled
and fed back to the model.
"""

from __future__ import annotations

import datetime


class TetherError(Exception):
    """Base class of all tether errors."""


class UsageError(TetherError):
    """The caller used tether wrongly; the message says how to fix it."""


class NotFound(UsageError):
    """A run, approval or other record does not exist."""


class InvalidEdit(UsageError):
    """Edited arguments at approval time that the tool's schema or the policy refuses.

    Raised before anything is recorded: the approval stays pending and can be decided again."""


class PolicyMismatch(UsageError):
    """The process's policy is not the one the run started under (rules and limits differ)."""


class ModelError(TetherError):
    """A model call failed.

    ``retryable`` marks transient failures (timeouts, 429, 5xx); ``retry_after`` is the delay the
    provider asked for, in seconds, when it said one.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        status: int | None = None,
        provider: str = "",
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        self.provider = provider


class CircuitOpen(ModelError):
    """Raised without calling the provider while its circuit is open."""


class ModelTimeout(ModelError):
    """The model did not answer in time (retryable)."""

    def __init__(self, message: str = "model call timed out", **kwargs: object) -> None:
        kwargs.setdefault("retryable", True)
        super().__init__(message, **kwargs)  # type: ignore[arg-type]


class JournalError(TetherError):
    """The journal cannot be read or written."""


class JournalCorrupted(JournalError):
    """An event cannot be decoded or does not match the hash chain."""

    def __init__(self, run_id: str, seq: int, reason: str) -> None:
        super().__init__(f"run {run_id}: event #{seq} is corrupt: {reason}")
        self.run_id = run_id
        self.seq = seq
        self.reason = reason


class JournalConflict(JournalError):
    """A write that does not continue the run's stored journal: another writer appended first
    (or the run already exists). Nothing of the write was stored."""


class ReplayDivergence(TetherError):
    """The replayed code asked for something the recording does not have."""

    propagate = True  # the engine lets it through instead of failing the scratch run

    def __init__(self, step: int, what: str, original: object, replayed: object) -> None:
        super().__init__(f"step {step}: {what}")
        self.step = step
        self.what = what
        self.original = original
        self.replayed = replayed


class RunError(TetherError):
    """A run ended in a state other than success."""

    def __init__(self, run_id: str, status: str, reason: str) -> None:
        super().__init__(f"run {run_id} ended {status}: {reason}")
        self.run_id = run_id
        self.status = status
        self.reason = reason


class StoreUnavailable(JournalError):
    """The store stayed unreachable (or locked) through every retry of a write or read.

    Whatever the failed write held is not stored; the journal ends where it ended before, so
    the run can be resumed from there once the store is back.
    """

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class RunLeased(JournalError):
    """Another process holds the run's lease: it is driving the run now.

    Only one process drives a run at a time; a second one refuses instead of journaling the
    first one's calls as in doubt or running them twice. Try again once the holder stops (its
    lease is released) or its lease expires (the holder died without releasing it).
    """

    def __init__(self, run_id: str, owner: str, expires: float) -> None:
        until = datetime.datetime.fromtimestamp(expires, tz=datetime.UTC)
        super().__init__(
            f"run {run_id} is being driven by {owner} until {until:%Y-%m-%d %H:%M:%S} UTC "
            "(its lease, renewed while it runs); try again when it has stopped"
        )
        self.run_id = run_id
        self.owner = owner
        self.expires = expires


class LeaseLost(JournalError):
    """This process's lease on a run was taken over (it stalled past the lease's expiry), so
    nothing it writes lands: the process that took the run over drives it from its journal."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"lease lost on run {run_id}: another process took the run over after this one's "
            "lease expired; nothing more is written by this process"
        )
        self.run_id = run_id
