"""A minimal OTLP/HTTP trace receiver for tests: a real HTTP server on loopback.

    with OTLPReceiver() as receiver:
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
        ...export spans...
        spans = receiver.wait_for_spans(5)

It accepts ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest`` body (optionally
gzip- or deflate-compressed), as the OTLP/HTTP exporter sends it, and keeps every span together
with its resource attributes. Anything else gets a 404 (or a 400 for a body that does not decode).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    """Repeated OTLP ``KeyValue`` pairs as a dict."""
    out: dict[str, Any] = {}
    kv: KeyValue
    for kv in kvs:
        out[kv.key] = any_value(kv.value)
    return out


@dataclass
class ReceivedSpan:
    """One span as the collector saw it, decoded into plain Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    scope: str
    raw: Span = field(repr=False)

    @property
    def is_error(self) -> bool:
        return self.status_code == Status.STATUS_CODE_ERROR

    def event(self, name: str) -> list[dict[str, Any]]:
        """Attributes of this span's events of that name, in order."""
        return [attrs for n, _, attrs in self.events if n == name]


class OTLPReceiver:
    """An OTLP/HTTP receiver in a background thread on 127.0.0.1 (a free port)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/traces":
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                except (DecodeError, OSError, zlib.error):
                    self.send_error(400)
                    return
                receiver._store(request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The base URL to put in ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _store(self, request: ExportTraceServiceRequest) -> None:
        decoded: list[ReceivedSpan] = []
        for rs in request.resource_spans:
            resource = attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    decoded.append(
                        ReceivedSpan(
                            name=s.name,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            kind=s.kind,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                            attributes=attributes(s.attributes),
                            events=[
                                (e.name, e.time_unix_nano, attributes(e.attributes))
                                for e in s.events
                            ],
                            status_code=s.status.code,
                            status_message=s.status.message,
                            resource=resource,
                            scope=ss.scope.name,
                            raw=s,
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(decoded)

    def clear(self) -> None:
        with self._lock:
            self.spans.clear()

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """The spans received so far, once there are at least ``count`` (or the timeout ends)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.spans) >= count or time.monotonic() >= deadline:
                    return list(self.spans)
            time.sleep(0.02)
