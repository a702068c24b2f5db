"""Telemetry: redaction of secrets and personal data, and OpenTelemetry export of runs.

:class:`Redactor` needs nothing beyond tether. The export functions import the OpenTelemetry
packages only when called (``pip install 'tether[otel]'``).
"""

from tether.telemetry.otel import (
    capture_content_from_env,
    export_run,
    maybe_export,
    otlp_tracer_provider,
)
from tether.telemetry.redaction import Redactor, luhn_ok

__all__ = [
    "Redactor",
    "capture_content_from_env",
    "export_run",
    "luhn_ok",
    "maybe_export",
    "otlp_tracer_provider",
]
