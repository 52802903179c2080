"""An OpenAI-compatible HTTP server for RAIN (``pip install 'rain-search[serve]'``).

>>> from rain_integrations.server import build_app, ServerLimits   # doctest: +SKIP
>>> app = build_app(lambda: RainGenerator.from_pretrained(config="fast"))  # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8000)                  # doctest: +SKIP
"""

from __future__ import annotations

from rain_search.extras import check

check("fastapi", "serve", "the RAIN server")
check("prometheus_client", "serve", "the RAIN server's GET /metrics")

from rain_integrations.server.app import build_app  # noqa: E402
from rain_integrations.server.limits import ServerLimits  # noqa: E402

__all__ = ["ServerLimits", "build_app"]
