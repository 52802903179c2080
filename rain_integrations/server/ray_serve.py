"""``rain serve --ray``: the same app as a Ray Serve deployment, one model per replica.

Each replica builds its own generator from a picklable factory (the command
line's :class:`~rain_search.spec.GeneratorSpec`, or any module-level callable)
and runs the app :func:`~rain_integrations.server.build_app` makes, so the
endpoints, limits and errors are the ones of the single-process server. Each
replica's own gate answers 429 when it is full, so Serve's
``max_ongoing_requests`` is set to what the gate admits (running plus queued).
HTTP comes in through a light front deployment that relays each request to
a replica, so a replica that dies is an OpenAI-shaped error, or a retry on
another replica, rather than Ray's plain-text 500 or a silently cut stream.

Metrics: the front serves ``GET /metrics`` itself (requests by route and
status, refusals, latency, over all replicas); each replica records every
metric through Ray's metrics as well (:class:`~rain_integrations.server.metrics.RayMirror`),
exported by Ray on each node with the replica's labels.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from rain_integrations.ray_cluster import Replicas, start_ray
from rain_integrations.server.app import build_app
from rain_integrations.server.forward import Message, Request, front_app, run_asgi
from rain_integrations.server.generators import GeneratorSource
from rain_integrations.server.limits import ServerLimits
from rain_integrations.server.main import is_loopback
from rain_integrations.server.metrics import RayMirror, ServerMetrics
from rain_integrations.server.options import ServeOptions
from rain_search.errors import ConfigError
from rain_search.extras import require
from rain_search.models import EMBEDDED_MODEL_NAME


class RainReplica:
    """One model replica: builds the app in its own process and answers relayed requests.

    It is not Serve's HTTP ingress: :class:`RainFront` is, and hands it each
    request as plain data (:func:`~rain_integrations.server.forward.run_asgi`),
    so that if this process dies, the front still answers in OpenAI's shape.
    """

    def __init__(
        self, factory: GeneratorSource, options: ServeOptions, loopback: bool = True
    ) -> None:
        if loopback:
            keep_grpc_on_loopback()
        self.app = build_app(
            factory,
            api_key=options.api_key,
            limits=options.limits,
            model_name=options.model_name,
            metrics=ServerMetrics(mirror=RayMirror()),
        )
        self.app.state.rain.generators.base()  # load the model now, not at the first request

    async def forward(self, request: Request) -> AsyncIterator[Message]:
        async for message in run_asgi(self.app, request):
            yield message


class RainFront:
    """Serve's HTTP ingress: no model, it relays each request to a :class:`RainReplica`.

    A replica that dies before anything reached the client is retried on
    another one; a stream it was serving ends with an SSE ``error`` event.
    """

    def __init__(self, replicas: Any, options: ServeOptions, loopback: bool = True) -> None:
        if loopback:
            keep_grpc_on_loopback()
        self._replicas = replicas.options(stream=True)
        self._options = options

    def __serve_build_asgi_app__(self) -> Any:
        return front_app(
            lambda request: self._replicas.forward.remote(request),
            max_bytes=self._options.limits.max_body_bytes,
            body_timeout=self._options.limits.body_timeout,
            api_key=self._options.api_key,
        )


def keep_grpc_on_loopback() -> None:
    """Bind this replica's inter-deployment gRPC server to 127.0.0.1, not ``[::]``.

    Ray Serve 2.60 starts that server in every replica on ``[::]:0`` (every
    address) whatever the node's address, with no setting to change it. For a
    cluster kept on loopback the port is rebound to 127.0.0.1, the node's own
    address, where Ray's other processes reach it. Called in the replica's
    constructor, before Ray starts the server; a Ray without that helper is
    left as it is.
    """
    try:
        from ray.serve._private import replica
    except ImportError:
        return
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None or getattr(original, "rain_loopback", False):
        return

    def on_loopback(server: Any, address: str) -> Any:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.removeprefix("[::]:")
        return original(server, address)

    on_loopback.rain_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = on_loopback


def application(
    factory: GeneratorSource,
    *,
    replicas: Replicas,
    options: ServeOptions | None = None,
    loopback: bool = True,
) -> Any:
    """A Ray Serve application (``serve.run(application(...))``) of ``replicas`` copies.

    Two deployments: ``rain`` (the model replicas) behind ``rain-front`` (the
    HTTP ingress, one light process that relays requests; see
    :mod:`~rain_integrations.server.forward`).
    """
    serve = require("ray.serve", "ray", "rain serve --ray")
    options = options or ServeOptions()
    limits = options.limits
    admitted = limits.max_concurrent + limits.max_queue + 1
    model = serve.deployment(
        RainReplica,
        name="rain",
        num_replicas=replicas.count,
        max_ongoing_requests=admitted,
        ray_actor_options={"num_cpus": replicas.cpus, "num_gpus": replicas.gpus},
    )
    front = serve.deployment(
        serve.ingress()(RainFront),
        name="rain-front",
        num_replicas=1,
        max_ongoing_requests=admitted * replicas.count,
        ray_actor_options={"num_cpus": 0},
    )
    return front.bind(model.bind(factory, options, loopback), options, loopback)


def check_resources(replicas: Replicas, available: dict[str, float]) -> None:
    """Fail now, naming the shortfall, rather than waiting forever in DEPLOYING."""
    for resource, each in (("GPU", replicas.gpus), ("CPU", replicas.cpus)):
        wanted, have = replicas.count * each, available.get(resource, 0.0)
        if wanted > have:
            raise ConfigError(
                f"{replicas.count} replicas x {each:g} {resource} need {wanted:g} {resource}s but "
                f"the Ray cluster has {have:g}; lower --replicas or the per-replica "
                f"{resource.lower()}s, or add nodes"
            )


def serve_with_ray(
    factory: GeneratorSource,
    options: ServeOptions | None = None,
    *,
    replicas: Replicas,
    address: str | None = None,
    blocking: bool = True,
) -> None:
    """Start (or join, with ``address``) a Ray cluster and serve the app on the options'
    ``host:port``.

    A local cluster for a loopback ``host`` listens on 127.0.0.1 only.
    """
    options = options or ServeOptions()
    loopback = address is None and is_loopback(options.host)
    ray = start_ray(address, loopback=is_loopback(options.host), purpose="rain serve --ray")
    serve = require("ray.serve", "ray", "rain serve --ray")
    check_resources(replicas, ray.cluster_resources())
    serve.start(http_options={"host": options.host, "port": options.port})
    app = application(factory, replicas=replicas, options=options, loopback=loopback)
    serve.run(app, name="rain", route_prefix="/", blocking=blocking)


BUILDER_ARGS: dict[str, type] = {
    "model": str,
    "preset": str,
    "template": str,
    "evaluator": str,
    "embedder": str,
    "device": str,
    "max_new_tokens": int,
    "seed": int,
    "max_batch_rows": int,
    "max_batch_kv_tokens": int,
    "replicas": int,
    "gpus_per_replica": float,
    "cpus_per_replica": float,
    "api_key": str,
    "model_name": str,
    "max_prompt_tokens": int,
    "max_tokens": int,
    "max_concurrent": int,
    "max_queue": int,
    "timeout": float,
    "max_wait": float,
}


def app_builder(args: dict[str, str]) -> Any:
    """The application for ``serve run rain_integrations.server.ray_serve:app_builder k=v ...``.

    Takes the ``rain serve`` options by their long names with underscores
    (``preset=fast replicas=2 gpus_per_replica=1``); ``api_key`` defaults to
    ``$RAIN_API_KEY``.
    """
    from rain_search.spec import GeneratorSpec

    unknown = sorted(set(args) - set(BUILDER_ARGS))
    if unknown:
        raise ConfigError(f"unknown option(s) {unknown}; use {', '.join(BUILDER_ARGS)}")
    try:
        values = {key: BUILDER_ARGS[key](value) for key, value in args.items()}
    except ValueError as exc:
        raise ConfigError(f"bad option value: {exc}") from exc
    spec = GeneratorSpec(**{k: values.pop(k) for k in list(values) if k in GENERATOR_ARGS})
    replicas = Replicas(
        int(values.pop("replicas", 1)),
        gpus=float(values.pop("gpus_per_replica", 0.0)),
        cpus=float(values.pop("cpus_per_replica", 1.0)),
    )
    api_key = values.pop("api_key", None) or os.environ.get("RAIN_API_KEY")
    model_name = values.pop("model_name", None) or spec.model or EMBEDDED_MODEL_NAME
    options = ServeOptions(
        api_key=None if api_key is None else str(api_key),
        model_name=str(model_name),
        limits=ServerLimits(**values),
    )
    # `serve run` may join any cluster: its network settings apply
    return application(spec, replicas=replicas, options=options, loopback=False)


GENERATOR_ARGS = frozenset(
    {
        "model",
        "preset",
        "template",
        "evaluator",
        "embedder",
        "device",
        "max_new_tokens",
        "seed",
        "max_batch_rows",
        "max_batch_kv_tokens",
    }
)
