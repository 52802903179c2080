"""``rain serve --ray``: the same app as a Ray Serve deployment, one model per replica.

Each replica builds its own generator from a picklable factory (the command
line's :class:`~rain_search.cli.GeneratorSpec`, or any module-level callable)
and serves the app :func:`~rain_integrations.server.build_app` makes, so the
endpoints, limits and errors are the ones of the single-process server. Each
replica's own gate answers 429 when it is full, so Serve's
``max_ongoing_requests`` is set to what the gate admits (running plus queued).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from rain_integrations.ray_cluster import start_ray
from rain_integrations.server.app import build_app
from rain_integrations.server.generators import GeneratorSource
from rain_integrations.server.limits import ServerLimits
from rain_integrations.server.main import is_loopback
from rain_search.errors import ConfigError
from rain_search.extras import require
from rain_search.models import EMBEDDED_MODEL_NAME


@dataclass(frozen=True)
class Replicas:
    """How many copies of the model, and what each takes from the cluster."""

    count: int = 1
    gpus: float = 0.0
    cpus: float = 1.0

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--replicas must be at least 1, got {self.count}")
        if self.gpus < 0 or self.cpus < 0:
            raise ConfigError("--gpus-per-replica and --cpus-per-replica cannot be negative")


class RainReplica:
    """One replica: its app is built in the replica's own process, after it starts."""

    def __init__(
        self,
        factory: GeneratorSource,
        api_key: str | None,
        limits: ServerLimits,
        model_name: str | None,
    ) -> None:
        self._parts = (factory, api_key, limits, model_name)

    def __serve_build_asgi_app__(self) -> Any:
        factory, api_key, limits, model_name = self._parts
        return build_app(factory, api_key=api_key, limits=limits, model_name=model_name)


def application(
    factory: GeneratorSource,
    *,
    replicas: Replicas,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
    model_name: str | None = None,
) -> Any:
    """A Ray Serve application (``serve.run(application(...))``) of ``replicas`` copies."""
    serve = require("ray.serve", "ray", "rain serve --ray")
    limits = limits or ServerLimits()
    deployment = serve.deployment(
        serve.ingress()(RainReplica),
        name="rain",
        num_replicas=replicas.count,
        max_ongoing_requests=limits.max_concurrent + limits.max_queue + 1,
        ray_actor_options={"num_cpus": replicas.cpus, "num_gpus": replicas.gpus},
    )
    return deployment.bind(factory, api_key, limits, model_name)


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
    *,
    replicas: Replicas,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
    model_name: str | None = None,
    address: str | None = None,
    blocking: bool = True,
) -> None:
    """Start (or join, with ``address``) a Ray cluster and serve the app on ``host:port``.

    A local cluster for a loopback ``host`` listens on 127.0.0.1 only.
    """
    ray = start_ray(address, loopback=is_loopback(host), purpose="rain serve --ray")
    serve = require("ray.serve", "ray", "rain serve --ray")
    check_resources(replicas, ray.cluster_resources())
    serve.start(http_options={"host": host, "port": port})
    app = application(
        factory, replicas=replicas, api_key=api_key, limits=limits, model_name=model_name
    )
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
    from rain_search.cli import GeneratorSpec

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
    return application(
        spec,
        replicas=replicas,
        api_key=None if api_key is None else str(api_key),
        limits=ServerLimits(**values),
        model_name=str(model_name),
    )


GENERATOR_ARGS = frozenset(
    {"model", "preset", "template", "evaluator", "embedder", "device", "max_new_tokens", "seed"}
)
