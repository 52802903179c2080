"""``rain serve`` without Ray: the app in one process, served by uvicorn.

uvicorn runs the app with :class:`~rain_integrations.server.protocol.GuardedProtocol`,
which caps request heads in bytes and seconds before they are parsed.
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Any

import uvicorn

from rain_integrations.server.app import build_app
from rain_integrations.server.generators import GeneratorSource
from rain_integrations.server.limits import ServerLimits
from rain_integrations.server.metrics import ServerMetrics
from rain_integrations.server.options import ServeOptions
from rain_integrations.server.protocol import guarded_protocol


def serve(
    generator: GeneratorSource, options: ServeOptions | None = None, *, quiet: bool = False
) -> None:
    """Serve ``generator`` on ``options.host:options.port`` until interrupted."""
    options = options or ServeOptions()
    if options.api_key is None and not is_loopback(options.host):
        print(
            f"rain: warning: serving on {options.host} without an API key: anyone who can reach "
            "this port can use the model; pass --api-key or set RAIN_API_KEY",
            file=sys.stderr,
        )
    metrics = ServerMetrics()
    app = build_app(
        generator,
        api_key=options.api_key,
        limits=options.limits,
        model_name=options.model_name,
        metrics=metrics,
    )
    if not quiet:
        name = options.model_name or "the model"
        print(f"rain: serving {name} at http://{options.host}:{options.port}/v1", file=sys.stderr)
    uvicorn.run(
        app,
        **uvicorn_options(options.limits, metrics),
        host=options.host,
        port=options.port,
        log_level="warning" if quiet else "info",
    )


def uvicorn_options(limits: ServerLimits, metrics: ServerMetrics | None = None) -> dict[str, Any]:
    """uvicorn's settings for ``limits``: the guarded protocol and h11's own head cap."""
    return {
        "http": guarded_protocol(limits.max_header_bytes, limits.header_timeout, metrics),
        "h11_max_incomplete_event_size": limits.max_header_bytes,
    }


def is_loopback(host: str) -> bool:
    """Is ``host`` reachable from this machine only?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
