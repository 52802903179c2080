"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

OpenAI clients read this body to raise their own exceptions (``BadRequestError``
and so on), so every refusal, including FastAPI's own validation errors,
comes back in it, with a status below 500 whenever the request was at fault.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rain_search.errors import RainError

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    504: "timeout_error",
}


class APIError(Exception):
    """A refusal with its HTTP status, the request field at fault, and a short code."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.param, self.code)

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind = TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def from_rain_error(exc: RainError, param: str | None = None) -> APIError:
    """A :class:`RainError` raised by bad input (prompt, config, template) as a 400."""
    return bad_request(str(exc), param, code=type(exc).__name__)


def install_handlers(app: FastAPI) -> None:
    """Validation errors, unknown routes and refusals all answer in OpenAI's shape."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc.errors()).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return APIError(exc.status_code, str(exc.detail)).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A failure of the server, not of the request (a model that cannot load, ...)."""
        message = f"the server failed: {type(exc).__name__}: {exc}"
        return APIError(500, message, code=type(exc).__name__).response()


def validation_error(errors: Any) -> APIError:
    """FastAPI's first validation error as a 400 naming the field (``messages.0.role``)."""
    first = list(errors)[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        message = (
            f"unknown field {param!r}: the RAIN server does not take it; remove it, or put RAIN "
            "settings under the 'rain' object"
        )
        return bad_request(message, param, "unknown_parameter")
    if first.get("type") == "json_invalid":
        return bad_request(f"the body is not valid JSON: {first.get('msg')}", None, "invalid_json")
    return bad_request(f"{param or 'request'}: {first.get('msg')}", param, "invalid_value")
