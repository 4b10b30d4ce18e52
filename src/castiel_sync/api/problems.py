"""RFC 9457 problem details: every error the API returns is ``application/problem+json``.

    Problem                  an error a person can act on (status, title, detail)
    ├── BadRequest           400 the request cannot be understood as sent (NUL characters too)
    ├── Unauthorized         401 no bearer token, or one we cannot accept
    ├── Forbidden            403 the caller's role may not do this
    ├── NotFound             404 no such object *for this caller* (another tenant's too)
    ├── ConflictProblem      409 the object's state forbids it (stale version, no credential)
    ├── PayloadTooLarge      413 body over the configured limit
    ├── UnprocessableProblem 422 well-formed but invalid settings (``errors`` with paths)
    └── BadGateway           502 a provider (token endpoint) failed or cannot be reached

Unexpected exceptions become a bare 500 with no stack trace and no exception text: the
detail is in the server log, keyed by the same ``instance``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:castiel-sync:problem:"

log = logging.getLogger("castiel_sync.api")


class Problem(Exception):
    """An error with a message a person can act on. ``detail`` is shown to the caller:
    never put a secret or another tenant's data in it."""

    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = headers or {}


class BadRequest(Problem):
    pass


class Unauthorized(Problem):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class Forbidden(Problem):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(Problem):
    status, title, slug = 404, "Not found", "not-found"


class ConflictProblem(Problem):
    status, title, slug = 409, "Conflict", "conflict"


class PayloadTooLarge(Problem):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class UnprocessableProblem(Problem):
    status, title, slug = 422, "Invalid request", "validation"


class BadGateway(Problem):
    status, title, slug = 502, "Bad gateway", "bad-gateway"


def problem_body(
    *,
    status: int,
    title: str,
    slug: str,
    detail: str,
    instance: str,
    errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    body = problem_body(
        status=problem.status,
        title=problem.title,
        slug=problem.slug,
        detail=problem.detail,
        instance=request.url.path,
        errors=problem.errors,
    )
    return JSONResponse(
        body, status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers
    )


def field_errors(
    errors: Sequence[Any], *, prefix: Sequence[str | int] = ()
) -> list[dict[str, Any]]:
    """Pydantic errors as ``[{"field": "body.syncFrequency.minutes", "message": ...}]``.

    Input values are left out on purpose: they may hold a secret.
    """
    out: list[dict[str, Any]] = []
    for error in errors:
        loc = [*prefix, *error.get("loc", ())]
        path = ".".join(str(part) for part in loc if part not in ("", None))
        message = str(error.get("msg", "invalid value"))
        message = message.removeprefix("Value error, ")
        out.append({"field": path or "body", "message": message, "code": error.get("type")})
    return out


def validation_problem(
    exc: ValidationError, *, prefix: Sequence[str | int] = ("body",)
) -> UnprocessableProblem:
    errors = field_errors(exc.errors(include_input=False, include_url=False), prefix=prefix)
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return UnprocessableProblem(f"{first['field']}: {first['message']}{more}", errors=errors)


_STATUS_TITLES = {
    400: ("Bad request", "bad-request"),
    401: ("Unauthorized", "unauthorized"),
    403: ("Forbidden", "forbidden"),
    404: ("Not found", "not-found"),
    405: ("Method not allowed", "method-not-allowed"),
    406: ("Not acceptable", "not-acceptable"),
    409: ("Conflict", "conflict"),
    413: ("Payload too large", "payload-too-large"),
    415: ("Unsupported media type", "unsupported-media-type"),
    422: ("Invalid request", "validation"),
}


def install_problem_handlers(app: FastAPI) -> None:
    """Route every error through problem+json."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(request, exc)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = field_errors(exc.errors())
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        detail = f"{first['field']}: {first['message']}{more}"
        return problem_response(request, UnprocessableProblem(detail, errors=errors))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        title, slug = _STATUS_TITLES.get(exc.status_code, ("Error", "error"))
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"nothing is served at {request.url.path}; see /docs for the API"
        problem = Problem(detail, headers=dict(exc.headers or {}))
        problem.status, problem.title, problem.slug = exc.status_code, title, slug
        return problem_response(request, problem)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The full exception goes to the server log only; the caller gets no internals.
        log.error(
            "unhandled error on %s %s (%s)",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc_info=exc,
        )
        problem = Problem(
            "the server failed to handle this request; it has been logged, try again later"
        )
        problem.status, problem.title, problem.slug = 500, "Internal server error", "internal"
        return problem_response(request, problem)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


class BodySizeLimitMiddleware:
    """Refuse bodies over ``max_bytes`` with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > limit:
                    await self._refuse(scope, send)
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not response_started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body = problem_body(
            status=413,
            title="Payload too large",
            slug="payload-too-large",
            detail=f"the request body is larger than {self.max_bytes} bytes; send less",
            instance=scope.get("path", ""),
        )
        response = JSONResponse(body, status_code=413, media_type=PROBLEM_JSON)
        await response(scope, _drain, send)


class NulCharacterGuardMiddleware:
    """Refuse NUL characters in the path, the query or a JSON body with 400.

    PostgreSQL cannot store U+0000 in text or JSONB, so without this guard such input
    would fail deep in the store as a 500. Webhook bodies are exempt: they are kept as raw
    bytes and checked by their provider's rules.
    """

    def __init__(self, app: ASGIApp, exempt_prefix: str = "/webhooks/") -> None:
        self.app = app
        self.exempt_prefix = exempt_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path = scope.get("raw_path") or scope.get("path", "").encode()
        query = scope.get("query_string", b"")
        if _has_nul(raw_path) or _has_nul(query) or "\x00" in scope.get("path", ""):
            await self._refuse(scope, send, "the URL")
            return
        headers = dict(scope.get("headers", []))
        is_json = b"json" in headers.get(b"content-type", b"")
        if not is_json or scope.get("path", "").startswith(self.exempt_prefix):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if b"\\u0000" in body or b"\x00" in body:
            await self._refuse(scope, send, "the JSON body")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope: Scope, send: Send, where: str) -> None:
        body = problem_body(
            status=400,
            title="Bad request",
            slug="bad-request",
            detail=f"{where} contains a NUL character (U+0000), which is not accepted; remove it",
            instance=scope.get("path", ""),
        )
        response = JSONResponse(body, status_code=400, media_type=PROBLEM_JSON)
        await response(scope, _drain, send)


def _has_nul(raw: bytes) -> bool:
    return b"\x00" in raw or b"%00" in raw.lower()


class _TooLarge(StarletteHTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it unchanged (it turns other
    errors into 400) and the problem handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes; send less")


async def _drain() -> Message:
    return {"type": "http.disconnect"}
