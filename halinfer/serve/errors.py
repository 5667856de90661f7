"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Messages never echo more than a bounded slice of the client's input (a huge prompt sent
back in an error body costs bandwidth and leaks it into logs).
"""
from __future__ import annotations

import json
import logging
import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("halinfer.serve")

MAX_SHOWN = 60  # characters of client input an error message may quote

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          405: "invalid_request_error", 413: "invalid_request_error", 500: "internal_error",
          503: "service_unavailable"}


def shown(value) -> str:
    """repr(value), cut to MAX_SHOWN characters."""
    s = repr(value)
    return s if len(s) <= MAX_SHOWN else s[:MAX_SHOWN - 3] + "..."


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code if code is not None else status}}


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(error_body(e.status, e.message, e.param, e.code), status_code=e.status, headers=e.headers)


_PARAM = re.compile(r"SamplingParams\.(\w+)")


def bad_value(e: Exception, rename: dict | None = None) -> APIError:
    """A 400 from a ValueError/TypeError of the engine's validation, in API field names
    (SamplingParams.max_tokens=0 -> max_tokens=0, or max_completion_tokens for chat)."""
    msg = str(e)
    m = _PARAM.search(msg)
    param = m.group(1) if m else None
    if param and rename and param in rename:
        param = rename[param]
    if m:
        msg = _PARAM.sub(lambda mm: (rename or {}).get(mm.group(1), mm.group(1)), msg)
    return APIError(400, msg[:500], param=param)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request body", None
    e = errs[0]
    if e.get("type") == "json_invalid":
        return f"malformed JSON body: {e.get('ctx', {}).get('error', e.get('msg'))}", None
    loc = [str(p) for p in e.get("loc", ()) if p != "body"]
    field = ".".join(loc) or "body"
    if e.get("type") == "missing":
        return f"{field} is required", field
    # A union type reports one error per branch; the first says enough.
    more = f" ({len(errs) - 1} more error(s))" if len(errs) > 1 else ""
    return f"{field}={shown(e.get('input'))} is invalid: {e.get('msg')}{more}", field.split(".")[0]


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, e: APIError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        msg, param = _validation_message(exc)
        return JSONResponse(error_body(400, msg, param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}"), status_code=500)


def sse(obj) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
