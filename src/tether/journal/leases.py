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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from tether.errors import LeaseLost, NotFound, RunLeased
from tether.journal.base import StoreBase

RENEW_BATCH = 300
"""Leases renewed by one statement (three parameters each, within every database's limit)."""

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


class LeaseRows(StoreBase):
    """Leases on the runs table: taken, renewed and given up outside the journal's writes
    (which check and renew the writer's lease in their own transaction)."""

    def acquire_lease(self, run_id: str, owner: str) -> Lease:
        """Take run ``run_id``'s lease for ``owner``, with a new fencing token.

        Free, expired, already ``owner``'s, or held by a process of this host that is gone: it
        is taken (one compare-and-set on the token, so of two processes taking it at once one
        wins). Otherwise :class:`~tether.errors.RunLeased` names the holder and its expiry.
        """
        runs = self.t["runs"]
        now = time.time()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(runs.c.lease_owner, runs.c.lease_expires, runs.c.lease_token).where(
                    runs.c.id == run_id
                )
            ).first()
            if row is None:
                raise NotFound(f"run {run_id!r}: no such run (see `tether runs`)")
            holder, expires, token = row[0], row[1], int(row[2])
            if (
                holder is not None
                and holder != owner
                and expires is not None
                and float(expires) >= now
                and not holder_gone(str(holder))
            ):
                raise RunLeased(run_id, str(holder), float(expires))
            taken = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.lease_token == token)
                .values(
                    lease_owner=owner, lease_expires=now + self.lease_ttl, lease_token=token + 1
                )
            )
            if taken.rowcount != 1:  # another process took it between our read and write
                raise RunLeased(run_id, "another process", now + self.lease_ttl)
        return Lease(run_id, owner, token + 1)

    _keeper: LeaseKeeper | None = None

    @property
    def lease_keeper(self) -> LeaseKeeper:
        """The thread that renews the leases this process holds on this store."""
        if self._keeper is None:
            self._keeper = LeaseKeeper(self.renew_leases, self.lease_ttl / 3)
        return self._keeper

    def renew_lease(self, lease: Lease) -> None:
        """Push the lease's expiry a time to live ahead; :class:`~tether.errors.LeaseLost` if
        it was taken over. A run not written yet (its row comes with its first flush) has
        nothing to renew."""
        if lease.run_id in self.renew_leases([lease]):
            raise LeaseLost(lease.run_id)

    def renew_leases(self, leases: Sequence[Lease]) -> set[str]:
        """Renew many leases in one transaction (a statement per ``RENEW_BATCH`` of them, not
        one per run: a process driving a thousand runs renews them all every few seconds);
        the ids of the runs whose lease was taken over."""
        runs = self.t["runs"]
        expires = time.time() + self.lease_ttl
        lost: set[str] = set()
        with self._tx() as conn:
            for i in range(0, len(leases), RENEW_BATCH):
                batch = leases[i : i + RENEW_BATCH]
                keys = [(lease.run_id, lease.token, lease.owner) for lease in batch]
                renewed = conn.execute(
                    runs.update()
                    .where(sa.tuple_(runs.c.id, runs.c.lease_token, runs.c.lease_owner).in_(keys))
                    .values(lease_expires=expires)
                )
                if renewed.rowcount == len(batch):
                    continue
                rows = conn.execute(
                    sa.select(runs.c.id, runs.c.lease_token, runs.c.lease_owner).where(
                        runs.c.id.in_([lease.run_id for lease in batch])
                    )
                ).all()
                # a stored run held by another token or owner; one not stored has no lease yet
                stored = {str(r[0]): (int(r[1]), r[2]) for r in rows}
                lost.update(
                    run_id
                    for run_id, token, owner in keys
                    if stored.get(run_id, (token, owner)) != (token, owner)
                )
        return lost

    def release_lease(self, lease: Lease) -> None:
        """Give the lease up (the token stays, so writes made under it stay refused once another
        process takes the run); a lease already taken over is left alone."""
        runs = self.t["runs"]
        with self._tx() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == lease.run_id, runs.c.lease_token == lease.token)
                .values(lease_owner=None, lease_expires=None)
            )


class LeaseKeeper:
    """Renews the leases this process holds on one store, from one daemon thread.

    Every third of the time to live it renews the leases held, all in one transaction (a write
    renews its lease too, but a tool call or a model call may outlast the lease without
    writing). ``renew`` is the store's :meth:`LeaseRows.renew_leases`; a lease it finds taken
    over is dropped (the driver's next write fails with :class:`~tether.errors.LeaseLost`).
    Errors (a store briefly down) are ignored: the next round tries again. The thread starts
    with the first lease held and ends when a round finds none.
    """

    def __init__(self, renew: Callable[[Sequence[Lease]], set[str]], interval: float) -> None:
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
            if not self._held:
                self._wake.set()  # the thread ends now rather than at its next round

    def _beat(self) -> None:
        while True:
            self._wake.wait(self._interval)
            with self._lock:
                self._wake.clear()
                held = list(self._held.values())
                if not held:  # nothing to renew: the thread ends (and lets go of the store)
                    self._thread = None
                    return
            try:
                lost = self._renew(held)
            except Exception:  # the store may be back by the next round
                continue
            for lease in held:
                if lease.run_id in lost:
                    self.lost.add(lease.run_id)
                    self.drop(lease)
