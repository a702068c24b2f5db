"""Run leases: one process drives a run at a time.

Every process that drives a run (a runtime's ``run`` or ``resume``, the CLI's ``resume``,
``approve``, ``answer``, ``cancel``) first takes the run's lease in the store: an owner, an expiry
and a fencing token, kept on the run's row. A live lease held by another process is respected
(:class:`~tether.errors.RunLeased`); an expired one, or one whose holder is a process on this host
that no longer exists, is taken over, and taking it over increases the token. Every journal write
of the driver checks its token in the same transaction, so a holder that stalled past its expiry
and was taken over writes nothing more (:class:`~tether.errors.LeaseLost`).

While a run is driven its store's :class:`LeaseKeeper` (one thread for all the runs of the
process) renews the lease every third of its time to live: a tool call may outlast the lease,
and a thread keeps renewing even when an ``async`` tool blocks the event loop. A process that
dies stops renewing, so its lease runs out after at most the time to live (sooner on the same
host: a dead process id is seen at once).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tether.errors import LeaseLost

DEFAULT_TTL = 15.0
"""Seconds a lease holds without renewal (``TETHER_LEASE_TTL`` overrides it)."""
TTL_ENV = "TETHER_LEASE_TTL"


@dataclass(slots=True, frozen=True)
class Lease:
    """A process's right to drive one run: writes carrying an older token are refused."""

    run_id: str
    owner: str
    token: int


def default_ttl() -> float:
    """The lease time to live from ``TETHER_LEASE_TTL`` (seconds), else :data:`DEFAULT_TTL`."""
    raw = os.environ.get(TTL_ENV, "").strip()
    if not raw:
        return DEFAULT_TTL
    try:
        ttl = float(raw)
    except ValueError:
        return DEFAULT_TTL
    return ttl if ttl > 0 else DEFAULT_TTL


_owners: dict[int, str] = {}


def this_owner() -> str:
    """This process as a lease owner: ``host:pid:random`` (the random part tells a process
    from an earlier one that had the same id). Made once per process (after a fork the id
    differs, so it is made again)."""
    pid = os.getpid()
    if pid not in _owners:
        _owners[pid] = f"{socket.gethostname()}:{pid}:{secrets.token_hex(4)}"
    return _owners[pid]


def holder_gone(owner: str) -> bool:
    """Whether the lease holder ``owner`` is a process of this host that no longer exists.

    Its lease can then be taken over at once instead of after it expires (a run whose driver
    was killed resumes without waiting). Holders on other hosts are never judged: only expiry
    frees their leases.
    """
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it exists, under another user
        return False
    return False


class LeaseKeeper:
    """Renews the leases this process holds on one store, from one daemon thread.

    Every third of the time to live it renews each lease held (a write renews its lease too, but
    a tool call or a model call may outlast the lease without writing). ``renew`` is the store's
    renewal; it raises :class:`~tether.errors.LeaseLost` when a lease was taken over, which
    drops that lease (the driver's next write fails with the same error). Other errors (a store
    briefly down) are ignored: the next round tries again. The thread starts with the first
    lease held and sleeps when none is.
    """

    def __init__(self, renew: Callable[[Lease], None], interval: float) -> None:
        self._renew = renew
        self._interval = interval
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost: set[str] = set()  # runs whose lease was found taken over

    def hold(self, lease: Lease) -> None:
        with self._lock:
            self._held[lease.run_id] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._beat, name="tether-lease-keeper", daemon=True
                )
                self._thread.start()

    def drop(self, lease: Lease) -> None:
        with self._lock:
            if self._held.get(lease.run_id) == lease:
                del self._held[lease.run_id]

    def _beat(self) -> None:
        while True:
            self._wake.wait(self._interval)
            with self._lock:
                held = list(self._held.values())
            for lease in held:
                try:
                    self._renew(lease)
                except LeaseLost:
                    self.lost.add(lease.run_id)
                    self.drop(lease)
                except Exception:  # the store may be back by the next round
                    continue
