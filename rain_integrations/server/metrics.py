"""Prometheus metrics for the server: load, outcomes, search work and latency.

Operators of vLLM or TGI build dashboards and alerts on the metrics those
servers expose; ``GET /metrics`` gives the same for RAIN, in Prometheus' text
format, with vLLM's names (``vllm:`` becomes ``rain:``) wherever the meaning is
the same: ``num_requests_running``, ``num_requests_waiting``,
``request_success_total``, ``prompt_tokens_total``, ``generation_tokens_total``,
``time_to_first_token_seconds``, ``request_queue_time_seconds`` and
``e2e_request_latency_seconds``. RAIN's own: ``requests_finished_total`` (by
route and HTTP status), ``requests_refused_total`` (by reason: the error's
``code``), ``search_iterations_total`` and ``forward_calls_total``.

Each app has its own registry (two apps in one process count apart). Inside a
Ray Serve replica every metric is also recorded through Ray's metrics
(:class:`RayMirror`), which Ray exports per node with the replica's
``deployment``, ``replica`` and ``application`` labels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from rain_search.result import RainResult

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)
"""Seconds: a RAIN answer takes from a fraction of a second to minutes."""

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The media type of ``GET /metrics``."""

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Spec:
    """One metric: its name (without ``_total`` for counters), kind, help and labels."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()


SPECS = (
    Spec("rain:num_requests_running", "gauge", "Searches holding a slot now."),
    Spec("rain:num_requests_waiting", "gauge", "Requests waiting for a search slot now."),
    Spec(
        "rain:requests_finished",
        "counter",
        "Requests answered, by route and HTTP status (refusals included).",
        ("route", "status"),
    ),
    Spec(
        "rain:requests_refused",
        "counter",
        "Requests refused (4xx, or 503 busy), by reason: the error body's code.",
        ("reason",),
    ),
    Spec(
        "rain:request_success",
        "counter",
        "Answers returned whole (HTTP 200), by OpenAI finish_reason.",
        ("finished_reason",),
    ),
    Spec("rain:prompt_tokens", "counter", "Prompt tokens of the searches that ended."),
    Spec("rain:generation_tokens", "counter", "Committed answer tokens of searches that ended."),
    Spec("rain:search_iterations", "counter", "Tree-search iterations of the searches that ended."),
    Spec(
        "rain:forward_calls",
        "counter",
        "Model forward calls each ended search took part in (a shared call counts per search).",
    ),
    Spec(
        "rain:time_to_first_token_seconds",
        "histogram",
        "Seconds from a request's arrival to its first committed token set.",
    ),
    Spec(
        "rain:request_queue_time_seconds",
        "histogram",
        "Seconds a request waited for a search slot (requests that got one).",
    ),
    Spec(
        "rain:e2e_request_latency_seconds",
        "histogram",
        "Seconds from a completion request's arrival to the end of its 200 response.",
    ),
)

FRONT = frozenset(
    {"rain:requests_finished", "rain:requests_refused", "rain:e2e_request_latency_seconds"}
)
"""What the Ray front knows (it runs no search): the rest is per replica."""

ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models"})
"""Routes counted by name; any other path is counted as ``other`` (bounded labels)."""
UNCOUNTED = frozenset({"/metrics", "/health"})
"""Scrapes and probes: counting them would bury the traffic they watch."""
TIMED = frozenset({"/v1/chat/completions", "/v1/completions"})


class Mirror(Protocol):
    """Another metrics system that records the same events (Ray's, in a replica)."""

    def record(self, spec: Spec, value: float, labels: dict[str, str]) -> None: ...


class ServerMetrics:
    """The app's metrics: one method per event the server sees."""

    def __init__(self, mirror: Mirror | None = None, only: frozenset[str] | None = None) -> None:
        """``only``: the metrics kept (the Ray front's :data:`FRONT`); others are not recorded."""
        specs = [spec for spec in SPECS if only is None or spec.name in only]
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics = {spec.name: prometheus_metric(spec, self.registry) for spec in specs}
        self._specs = {spec.name: spec for spec in specs}
        self._mirror = mirror

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)

    def load(self, running: int, waiting: int) -> None:
        """The gate's counts changed."""
        self._record("rain:num_requests_running", running)
        self._record("rain:num_requests_waiting", waiting)

    def finished(self, route: str, status: int, seconds: float | None) -> None:
        """A request's response ended (``seconds``: an answered completion's latency)."""
        self._record("rain:requests_finished", 1, route=route, status=str(status))
        if seconds is not None:
            self._record("rain:e2e_request_latency_seconds", seconds)

    def refused(self, reason: str) -> None:
        self._record("rain:requests_refused", 1, reason=reason)

    def succeeded(self, finish_reason: str) -> None:
        self._record("rain:request_success", 1, finished_reason=finish_reason)

    def queued(self, seconds: float) -> None:
        self._record("rain:request_queue_time_seconds", seconds)

    def first_token(self, seconds: float) -> None:
        self._record("rain:time_to_first_token_seconds", seconds)

    def searched(self, result: RainResult) -> None:
        """A search ended with a result: count its tokens and its work."""
        self._record("rain:prompt_tokens", result.prompt_tokens)
        self._record("rain:generation_tokens", result.completion_tokens)
        self._record("rain:search_iterations", sum(step.iterations for step in result.steps))
        self._record("rain:forward_calls", result.totals.forward_calls)

    def _record(self, name: str, value: float, **labels: str) -> None:
        metric = self._metrics.get(name)
        if metric is None:
            return
        target = metric.labels(**labels) if labels else metric
        if isinstance(target, Counter):
            target.inc(value)
        elif isinstance(target, Gauge):
            target.set(value)
        else:
            target.observe(value)
        if self._mirror is not None:
            self._mirror.record(self._specs[name], value, labels)


def prometheus_metric(spec: Spec, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    if spec.kind == "gauge":
        return Gauge(spec.name, spec.help, spec.labels, registry=registry)
    return Histogram(spec.name, spec.help, spec.labels, registry=registry, buckets=LATENCY_BUCKETS)


class RayMirror:
    """Every metric also recorded through Ray Serve's metrics, made on first use.

    Ray exports them from each node's metrics agent (Prometheus format) with
    Serve's ``deployment``, ``replica`` and ``application`` labels, so each
    replica's series stay apart; Ray does not take ``:`` in a name, so there
    ``rain:`` is ``rain_`` (:func:`ray_name`).
    """

    def __init__(self) -> None:
        from ray.serve import metrics

        self._module = metrics
        self._made: dict[str, Any] = {}

    def record(self, spec: Spec, value: float, labels: dict[str, str]) -> None:
        metric = self._made.get(spec.name) or self._make(spec)
        tags = labels or None
        if spec.kind == "counter":
            metric.inc(value, tags=tags)
        elif spec.kind == "gauge":
            metric.set(value, tags=tags)
        else:
            metric.observe(value, tags=tags)

    def _make(self, spec: Spec) -> Any:
        name = ray_name(spec)
        kinds = {"counter": "Counter", "gauge": "Gauge", "histogram": "Histogram"}
        make = getattr(self._module, kinds[spec.kind])
        extra = {"boundaries": list(LATENCY_BUCKETS)} if spec.kind == "histogram" else {}
        metric = make(name, description=spec.help, tag_keys=spec.labels, **extra)
        self._made[spec.name] = metric
        return metric


def ray_name(spec: Spec) -> str:
    """The name under Ray, which refuses ``:`` in names: ``rain:x`` is ``rain_x`` there."""
    return spec.name.replace(":", "_") + ("_total" if spec.kind == "counter" else "")


Send = Callable[[dict[str, Any]], Any]


class MetricsMiddleware:
    """ASGI middleware that counts every response by route and status, and its refusals.

    A refusal's reason is the ``code`` of its OpenAI-shaped error body (read
    only for 4xx and 503 responses, which are small JSON documents).
    """

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNCOUNTED:
            await self.app(scope, receive, send)
            return
        arrival = time.perf_counter()
        scope.setdefault("state", {})["rain_arrival"] = arrival
        seen = Response()

        async def watch(message: dict[str, Any]) -> None:
            seen.see(message)
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            seen.status = seen.status or 500  # answered by the server's last-resort handler
            raise
        finally:
            self.count(scope["path"], seen, arrival)

    def count(self, path: str, seen: Response, arrival: float) -> None:
        if seen.status is None:
            return  # the client left before any answer: no status to count
        answered = path in TIMED and seen.status == 200
        seconds = time.perf_counter() - arrival if answered else None
        self.metrics.finished(path if path in ROUTES else "other", seen.status, seconds)
        if seen.refused:
            self.metrics.refused(seen.reason())


class Response:
    """What a response's ASGI messages said: its status and, for a refusal, its body."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.body = b""

    @property
    def refused(self) -> bool:
        """A 4xx (but 499, the client leaving) or a 503 (busy)."""
        status = self.status or 0
        return (400 <= status < 500 and status != 499) or status == 503

    def see(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        elif message["type"] == "http.response.body" and self.refused and len(self.body) < 65536:
            self.body += bytes(message.get("body", b""))

    def reason(self) -> str:
        """The error body's ``code``; the status when there is none (or no JSON body)."""
        try:
            code = json.loads(self.body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        return str(code) if code else str(self.status)
