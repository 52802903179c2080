"""Joining a Ray cluster, or starting a local one that only this machine can reach;
and how many copies of the model run there, with what each one takes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType

from rain_search.errors import ConfigError
from rain_search.extras import require


@dataclass(frozen=True)
class Replicas:
    """How many copies of the model run on the cluster, and what each one takes from it.

    One record for ``rain serve --ray``'s Serve replicas and ``rain batch --ray``'s
    Ray Data actors; ``unit`` names them in errors as their command-line options
    do (``--replicas``, ``--gpus-per-replica``; ``--actors``, ``--gpus-per-actor``).
    """

    count: int = 1
    gpus: float = 0.0
    cpus: float = 1.0
    unit: str = "replica"

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--{self.unit}s must be at least 1, got {self.count}")
        if self.gpus < 0 or self.cpus < 0:
            raise ConfigError(
                f"--gpus-per-{self.unit} and --cpus-per-{self.unit} cannot be negative"
            )


def start_ray(address: str | None, *, loopback: bool, purpose: str) -> ModuleType:
    """``ray``, initialised: joined to ``address``, or a new local cluster.

    A local cluster otherwise listens on every network address; with
    ``loopback`` it listens on 127.0.0.1 only. Ray reads the setting that does
    this (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) when it is first imported, so
    it is set before the import.

    Ray's usage-stats reporting (which sends cluster metadata to Anyscale) is
    turned off, ``RAY_USAGE_STATS_ENABLED=0``, unless the environment already
    sets that variable: a user opts in with ``RAY_USAGE_STATS_ENABLED=1``.
    """
    local = address is None and loopback
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = require("ray", "ray", purpose)
    if not ray.is_initialized():
        extra = {"_node_ip_address": "127.0.0.1"} if local else {}
        ray.init(address=address, include_dashboard=False, **extra)
    return ray
