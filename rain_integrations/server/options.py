"""What ``rain serve`` is asked for, in one record for both ways of serving.

``serve`` (uvicorn in this process) and ``serve_with_ray`` (Ray Serve
replicas) take the same :class:`ServeOptions`, built once from the command
line, so an option added to one cannot be forgotten by the other.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from rain_integrations.server.limits import ServerLimits


@dataclass(frozen=True)
class ServeOptions:
    """Where the server listens, who may call it, the model's name and what it takes on.

    ``api_key`` (None: no key) is required on every route but ``/health``;
    ``model_name`` is what clients send as ``model`` (None: the model's name).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    model_name: str | None = None
    limits: ServerLimits = field(default_factory=ServerLimits)

    @classmethod
    def from_args(cls, args: argparse.Namespace, model_name: str) -> ServeOptions:
        """The options of ``rain serve``'s parsed command line."""
        limits = ServerLimits(
            max_prompt_tokens=args.max_prompt_tokens,
            max_tokens=args.max_tokens,
            max_concurrent=args.max_concurrent,
            max_queue=args.max_queue,
            timeout=args.timeout,
            max_wait=args.max_wait,
        )
        return cls(
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            model_name=model_name,
            limits=limits,
        )
