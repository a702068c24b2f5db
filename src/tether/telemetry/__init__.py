"""Telemetry: OpenTelemetry export of runs, redacted.

The export functions import the OpenTelemetry packages only when called (``pip install
'tether[otel]'``). :class:`Redactor` (the journal's, in :mod:`tether.journal.redaction`) is here
too, since exports are redacted with it.
"""

from tether.journal.redaction import Redactor, luhn_ok
from tether.telemetry.otel import (
    capture_content_from_env,
    export_run,
    maybe_export,
    otlp_tracer_provider,
)

__all__ = [
    "Redactor",
    "capture_content_from_env",
    "export_run",
    "luhn_ok",
    "maybe_export",
    "otlp_tracer_provider",
]
