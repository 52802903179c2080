"""``rain serve`` without Ray: the app in one process, served by uvicorn."""

from __future__ import annotations

import ipaddress
import sys

import uvicorn

from rain_integrations.server.app import build_app
from rain_integrations.server.generators import GeneratorSource
from rain_integrations.server.limits import ServerLimits


def serve(
    generator: GeneratorSource,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
    model_name: str | None = None,
    quiet: bool = False,
) -> None:
    """Serve ``generator`` on ``host:port`` until interrupted."""
    if api_key is None and not is_loopback(host):
        print(
            f"rain: warning: serving on {host} without an API key: anyone who can reach this "
            "port can use the model; pass --api-key or set RAIN_API_KEY",
            file=sys.stderr,
        )
    app = build_app(generator, api_key=api_key, limits=limits, model_name=model_name)
    if not quiet:
        print(
            f"rain: serving {model_name or 'the model'} at http://{host}:{port}/v1", file=sys.stderr
        )
    uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info")


def is_loopback(host: str) -> bool:
    """Is ``host`` reachable from this machine only?"""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
