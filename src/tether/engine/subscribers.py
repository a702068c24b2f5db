"""Who hears that a run ended: exporters subscribe here, so the engine depends on none of them.

A subscriber is a callable ``(store, run_id) -> None``. The runtime calls each one after a run
has ended and its journal is durable (on a worker thread, so a slow exporter does not hold up
the event loop); it reads what it needs from the journal. A subscriber that raises is logged and
skipped: telemetry never fails a run.

Subscribers come from two places:

* ``Runtime(subscribers=[...])`` or :meth:`tether.engine.Runtime.subscribe`, in code;
* installed packages, through the ``tether.run_ended`` entry point group: each entry names a
  factory that takes no arguments and returns a subscriber, or ``None`` when it is not configured.
  tether's OpenTelemetry exporter is one (``tether.telemetry.otel:run_ended_exporter``): it
  subscribes when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set. Factories are called when a
  :class:`~tether.engine.Runtime` is made, as exporters read their settings when set up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.journal.store import Store

RunEnded = Callable[["Store", str], None]
"""Called with the store and a run's id once the run has ended."""

ENTRY_POINT_GROUP = "tether.run_ended"

log = logging.getLogger("tether.subscribers")


def installed_subscribers() -> list[RunEnded]:
    """The subscribers installed packages configure now (factories returning ``None`` left out)."""
    found: list[RunEnded] = []
    for entry in _entry_points():
        try:
            factory = entry.load()
            subscriber = factory()
        except Exception as exc:  # a broken plugin is reported, not fatal
            log.warning("run-ended subscriber %s could not be set up: %s", entry.name, exc)
            continue
        if subscriber is not None:
            found.append(subscriber)
    return found


def notify(subscribers: list[RunEnded], store: Store, run_id: str) -> None:
    """Tell every subscriber that ``run_id`` ended; one that fails is logged and skipped."""
    for subscriber in subscribers:
        try:
            subscriber(store, run_id)
        except Exception as exc:
            name = getattr(subscriber, "__qualname__", type(subscriber).__name__)
            log.warning("run-ended subscriber %s failed for run %s: %s", name, run_id, exc)


@cache
def _entry_points() -> tuple[EntryPoint, ...]:
    """The group's entries (scanning installed packages once a process)."""
    return tuple(sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name))
