"""Joining a Ray cluster, or starting a local one that only this machine can reach."""

from __future__ import annotations

import os
from types import ModuleType

from rain_search.extras import require


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
