"""Export a run's journal as OpenTelemetry spans, following the GenAI semantic conventions.

    from tether.telemetry import export_run, otlp_tracer_provider

    provider = otlp_tracer_provider()          # OTLP/HTTP to $OTEL_EXPORTER_OTLP_ENDPOINT
    export_run(store, run_id, tracer_provider=provider)
    provider.force_flush()

One trace per run:

* ``invoke_agent {agent}``: the run, from ``run_started`` to ``run_finished`` (or the last event
  of a run that has not ended). Span events: ``tether.run.resumed``, ``tether.input.requested``,
  ``tether.input.received``, ``tether.escalated``, ``tether.budget.exceeded``,
  ``tether.validation.failed``, ``tether.feedback``.
* ``chat {model}``, a child per model call, ending at its ``model_response`` (or
  ``model_error``) and starting the recorded duration before (older journals: at the
  ``model_request`` event), with the model names, token usage and finish reasons.
* ``execute_tool {tool}``, a child per proposed tool call: from ``tool_proposed`` to the event
  that settled it (``tool_finished``, a denial, a rejection, an escalation); a read the policy
  plainly allowed is one ``tool_finished`` event, and its span starts the call's recorded
  duration before it. Span events:
  ``tether.policy.decision``, ``tether.approval.requested``, ``tether.approval.decided`` (at the
  time of the human's decision), ``tether.tool.started``, ``tether.escalated``. A plain allow
  journaled with the proposal gives the same ``tether.policy.decision`` span event.

Timestamps are the journal's, so a run exported hours later still shows its true timeline (an
approval wait is as long as the human took).

Prompts, responses, tool arguments and results are recorded only when content capture is on
(``capture_content=True``, or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``), and
then always through a :class:`~tether.journal.redaction.Redactor` (``Redactor.from_env()``
unless one is given). The ``opentelemetry`` packages are imported only when a function here is
called: ``pip install 'tether[otel]'``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tether.journal.redaction import Redactor
from tether.journal.store import Store
from tether.telemetry.spans import Span, plan_spans

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import TracerProvider as ApiTracerProvider

__all__ = [
    "CAPTURE_CONTENT_ENV",
    "ENDPOINT_ENV",
    "capture_content_from_env",
    "export_run",
    "maybe_export",
    "otlp_tracer_provider",
    "run_ended_exporter",
]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
INSTALL_HINT = "pip install 'tether[otel]'"
SERVICE_NAME = "tether"

log = logging.getLogger("tether.telemetry")


def capture_content_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` turns content capture on."""
    env = os.environ if environ is None else environ
    return env.get(CAPTURE_CONTENT_ENV, "").strip().lower() in ("true", "1", "yes", "on")


def _otel_missing(exc: ImportError) -> ImportError:
    return ImportError(
        f"OpenTelemetry export needs the opentelemetry packages ({exc.name or exc}); "
        f"install them with: {INSTALL_HINT}"
    )


# -- emitting: the plan as OpenTelemetry spans ------------------------------------------------


def _clean(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: no ``None``, lists of one primitive type."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            items = [v for v in value if v is not None]
            if not items:
                continue
            if (
                not all(isinstance(v, (str, bool, int, float)) for v in items)
                or len({type(v) for v in items}) > 1
            ):
                items = [str(v) for v in items]
            out[key] = list(items)
        elif isinstance(value, (str, bool, int, float)):
            out[key] = value
        else:
            out[key] = json.dumps(value, default=str, ensure_ascii=False)
    return out


def _ns(ts: float) -> int:
    return round(ts * 1e9)


def export_run(
    store: Store,
    run_id: str,
    *,
    tracer_provider: ApiTracerProvider | None = None,
    capture_content: bool | None = None,
    redactor: Redactor | None = None,
) -> int:
    """Emit the spans of one run (see the module docstring); return how many were emitted.

    Args:
        store: the store holding the run.
        run_id: the run's id (or a unique prefix of it).
        tracer_provider: where the spans go; the global provider when ``None``.
        capture_content: record prompts, responses, tool arguments and results (redacted);
            ``None`` reads ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``.
        redactor: masks captured content and free text; ``Redactor.from_env()`` when ``None``.

    The spans are handed to the provider's processors; call ``force_flush()`` on the provider to
    wait until they are sent. Raises ImportError (naming ``pip install 'tether[otel]'``) when the
    OpenTelemetry API is not installed, and NotFound for an unknown run.
    """
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode
    except ImportError as exc:
        raise _otel_missing(exc) from exc
    run = store.get_run(run_id)
    events = store.events(run.id)
    if not events:
        return 0
    capture = capture_content_from_env() if capture_content is None else capture_content
    spans = plan_spans(run, events, capture=capture, redactor=redactor or Redactor.from_env())
    provider = tracer_provider or trace.get_tracer_provider()
    from tether import __version__

    tracer = provider.get_tracer("tether", __version__)
    kinds = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT}

    def start(plan: Span, parent: Any) -> Any:
        span = tracer.start_span(
            plan.name,
            context=parent,
            kind=kinds[plan.kind],
            attributes=_clean(plan.attributes),
            start_time=_ns(plan.start),
        )
        for e in plan.events:
            span.add_event(e.name, _clean(e.attributes), timestamp=_ns(e.ts))
        if plan.error is not None:
            span.set_attribute("error.type", plan.error[0])
            span.set_status(Status(StatusCode.ERROR, plan.error[1]))
        return span

    root_plan, children = spans[0], spans[1:]
    root = start(root_plan, otel_context.Context())  # a new trace, whatever span is current
    parent = trace.set_span_in_context(root)
    for plan in children:
        start(plan, parent).end(end_time=_ns(max(plan.end, plan.start)))
    root.end(end_time=_ns(max(root_plan.end, root_plan.start)))
    return len(spans)


def otlp_tracer_provider(endpoint: str | None = None) -> TracerProvider:
    """A TracerProvider sending spans over OTLP/HTTP (protobuf) with a batch processor.

    ``endpoint`` is the collector's base URL (``http://host:4318``; ``/v1/traces`` is added) or
    the full traces URL. Without it, the exporter reads ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``http://localhost:4318``) and the other standard
    ``OTEL_EXPORTER_OTLP_*`` variables. The resource's ``service.name`` is ``tether`` unless
    ``OTEL_SERVICE_NAME`` says otherwise.
    """
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise _otel_missing(exc) from exc
    from tether import __version__

    url = None
    if endpoint:
        url = (
            endpoint
            if endpoint.rstrip("/").endswith("/v1/traces")
            else (endpoint.rstrip("/") + "/v1/traces")
        )
    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME,
            "service.version": __version__,
        }
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return provider


_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()
_warned: set[str] = set()


def _shared_provider(key: str) -> Any:
    with _shared_lock:
        provider = _shared.get(key)
        if provider is None:
            provider = otlp_tracer_provider()
            _shared[key] = provider
        return provider


def run_ended_exporter() -> Callable[[Store, str], None] | None:
    """The runtime's OpenTelemetry subscriber (entry point ``tether.run_ended``): exports each
    run that ends, waiting until its spans are sent, when an OTLP endpoint is configured;
    ``None`` otherwise (see :mod:`tether.engine.subscribers`)."""
    if not (os.environ.get(TRACES_ENDPOINT_ENV) or os.environ.get(ENDPOINT_ENV)):
        return None

    def export_ended_run(store: Store, run_id: str) -> None:
        maybe_export(store, run_id, flush=True)

    return export_ended_run


def maybe_export(store: Store, run_id: str, *, flush: bool = False) -> int:
    """Export a run over OTLP if ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific
    variable) is set; otherwise do nothing. Returns the number of spans emitted.

    What the runtime's subscriber (:func:`run_ended_exporter`) calls as a run ends. It never
    raises: a missing package or a failed export is logged as a warning (on the
    ``tether.telemetry`` logger) and the run goes on. Spans are sent in the background;
    ``flush=True`` waits (up to 5 s) until they are.
    """
    endpoint = os.environ.get(TRACES_ENDPOINT_ENV) or os.environ.get(ENDPOINT_ENV)
    if not endpoint:
        return 0
    try:
        provider = _shared_provider(endpoint)
        count = export_run(store, run_id, tracer_provider=provider)
        if flush:
            provider.force_flush(timeout_millis=5000)
        return count
    except ImportError as exc:
        if "import" not in _warned:
            _warned.add("import")
            log.warning("%s is set but spans cannot be exported: %s", ENDPOINT_ENV, exc)
        return 0
    except Exception as exc:
        log.warning("could not export run %s to %s: %s", run_id, endpoint, exc)
        return 0
