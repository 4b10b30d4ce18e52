"""An emulator of the Dataverse Web API (Dynamics 365), its Microsoft identity platform
OAuth server, and Dataverse webhooks.

Written from Microsoft's documentation (``powerapps-docs/developer/data-platform/...``
and the Entra identity platform pages), not from the adapter:

- OAuth (:func:`dataverse_oauth`): ``/{tenant}/oauth2/v2.0/authorize`` and ``/token``; the
  scope must name this environment's ``https://<org host>/.default`` resource; every
  refresh returns a new refresh token and the old one is *not* revoked ("The Microsoft
  identity platform doesn't revoke old refresh tokens", Entra refresh-tokens); errors carry
  ``error``, ``error_description`` ("AADSTS70008: ...\\r\\nTrace ID: ...\\r\\nCorrelation ID:
  ...\\r\\nTimestamp: ..."), ``error_codes``, ``timestamp``, ``trace_id``,
  ``correlation_id`` (Azure AD "Token Issuance Endpoint Errors").
- ``GET /api/data/v9.2/WhoAmI``; ``GET /api/data/v9.2/{entityset}`` with ``$select``,
  ``$filter`` (``eq ne gt ge lt le``, ``and or not``, parentheses, ``contains``,
  ``startswith``, ``endswith`` with T-SQL wildcards; quoted strings with ``''``; unquoted
  ISO dates, GUIDs, numbers, ``true false null``; string comparisons case-insensitive;
  a malformed literal is "There is an unterminated literal at position N in '...'"
  (webapi/query/filter-rows.md)), ``$orderby``, ``$top`` (ignored with maxpagesize);
  ``Prefer: odata.maxpagesize`` (max 5,000, echoed in ``Preference-Applied``) and
  ``@odata.nextLink`` with a ``$skiptoken`` paging cookie (webapi/query/page-results.md).
- Change tracking: ``Prefer: odata.track-changes`` returns ``@odata.deltaLink``
  (``$deltatoken=<version>!<MM/dd/yyyy HH:mm:ss>``); the delta link returns new or updated
  rows first, then removed ones as ``$deletedEntity`` entries, and a new delta link; a
  record created and deleted after the token is still reported deleted; ``$filter``,
  ``$orderby``, ``$expand``, ``$top`` are refused with tracking
  (use-change-tracking-synchronize-data-external-systems.md); ``disable_change_tracking``
  makes a table answer ``0x80072491`` ChangeTrackingNotEnabledForEntity.
- ``POST`` -> ``204`` + ``OData-EntityId`` (or ``201`` with ``Prefer: return=representation``);
  ``PATCH`` upserts unless ``If-Match: *`` (404 when missing) or ``If-None-Match: *``
  (412 when present); ``If-Match: W/"<version>"`` mismatch -> 412 "The version of the
  existing record doesn't match the RowVersion property provided."; ``DELETE`` -> 204;
  rows carry ``@odata.etag`` ``W/"<version>"`` (perform-conditional-operations, create-entity).
- Errors ``{"error": {"code", "message"}}``; a 401 has an empty body and a
  ``WWW-Authenticate: Bearer`` challenge; service protection 429s carry ``Retry-After``
  seconds and ``0x80072322`` / ``0x80072321`` / ``0x80072326``; every response carries
  ``x-ms-ratelimit-burst-remaining-xrm-requests`` and
  ``x-ms-ratelimit-time-remaining-xrm-requests`` (api-limits.md).
- Webhooks (use-webhooks.md, register-web-hook.md): a JSON ``RemoteExecutionContext``
  POSTed with ``x-ms-dynamics-*`` headers; authentication ``WebhookKey`` (``?code=``),
  ``HttpHeader`` or ``HttpQueryString`` per ``webhook_secret`` (same notation as the
  adapter's: ``value``, ``HttpHeader:k=v&k2=v2``, ``HttpQueryString:k=v``).
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from castiel_sync.sdk import WebhookRequest
from castiel_sync.testing._kit import (
    EntityStore,
    FakeClock,
    ProviderEmulator,
    RecordStore,
    StoredRecord,
)
from castiel_sync.testing.oauth import OAuthClient, OAuthEmulator

API = "/api/data/v9.2"
MAX_PAGE_SIZE = 5000
NOT_FOUND = "0x80040217"
DUPLICATE_RECORD = "0x80040237"
CONCURRENCY_MISMATCH = "0x80060882"
VERSION_MISMATCH = (
    "The version of the existing record doesn't match the RowVersion property provided."
)
QUERY_ERROR = "0x80060888"
CHANGE_TRACKING_NOT_ENABLED = "0x80072491"
THROTTLES = {
    "requests": (
        "0x80072322",
        "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
    ),
    "execution_time": (
        "0x80072321",
        "Combined execution time of incoming requests exceeded limit of 1,200,000 "
        "milliseconds over time window of 300 seconds. Decrease number of concurrent "
        "requests or reduce the duration of requests and try again later.",
    ),
    "concurrent": ("0x80072326", "Number of concurrent requests exceeded the limit of 52."),
}
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class Table:
    logical_name: str
    entity_set: str
    primary_id: str
    columns: dict[str, str]  # name -> string | memo | int | money | bool | datetime | date | guid
    read_only: frozenset[str] = frozenset()

    @property
    def all_columns(self) -> dict[str, str]:
        return {
            self.primary_id: "guid",
            **self.columns,
            "createdon": "datetime",
            "modifiedon": "datetime",
        }


TABLES: dict[str, Table] = {
    t.logical_name: t
    for t in (
        Table(
            "account",
            "accounts",
            "accountid",
            {
                "name": "string",
                "accountnumber": "string",
                "websiteurl": "string",
                "telephone1": "string",
                "emailaddress1": "string",
                "address1_city": "string",
                "address1_country": "string",
                "numberofemployees": "int",
                "revenue": "money",
                "description": "memo",
                "creditonhold": "bool",
            },
        ),
        Table(
            "contact",
            "contacts",
            "contactid",
            {
                "firstname": "string",
                "lastname": "string",
                "fullname": "string",
                "emailaddress1": "string",
                "telephone1": "string",
                "jobtitle": "string",
                "_parentcustomerid_value": "guid",
            },
            frozenset({"fullname", "_parentcustomerid_value"}),
        ),
        Table(
            "opportunity",
            "opportunities",
            "opportunityid",
            {
                "name": "string",
                "estimatedvalue": "money",
                "stepname": "string",
                "estimatedclosedate": "date",
                "closeprobability": "int",
                "description": "memo",
                "_parentaccountid_value": "guid",
            },
            frozenset({"_parentaccountid_value"}),
        ),
    )
}
BY_SET = {t.entity_set: t for t in TABLES.values()}


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- versioned store: every write gets a new org-wide row version (etag, change tracking) --


class VersionedEntityStore(EntityStore):
    def __init__(self, name: str, clock: FakeClock, id_factory: Callable[[], str], versions: Any):
        super().__init__(name, clock, id_factory)
        self._counter = versions
        self.version: dict[str, int] = {}

    def _bump(self, record_id: str) -> None:
        self.version[record_id] = next(self._counter)

    def create(self, data: Mapping[str, Any], *, id: str | None = None) -> StoredRecord:
        record = super().create(data, id=id)
        self._bump(record.id)
        return record

    def update(self, record_id: str, changes: Mapping[str, Any]) -> StoredRecord:
        record = super().update(record_id, changes)
        self._bump(record_id)
        return record

    def delete(self, record_id: str) -> StoredRecord:
        record = super().delete(record_id)
        self._bump(record_id)
        return record


class VersionedRecordStore(RecordStore):
    def __init__(self, clock: FakeClock, id_factory: Callable[[], str]) -> None:
        super().__init__(clock, id_factory)
        self.versions = itertools.count(1000)
        self.current_version = 999

    def __getitem__(self, entity: str) -> VersionedEntityStore:
        if entity not in self._entities:
            self._entities[entity] = VersionedEntityStore(
                entity, self.clock, self.id_factory_for(entity), self._tick()
            )
        return self._entities[entity]  # type: ignore[return-value]

    def _tick(self) -> Any:
        store = self

        class _Counter:
            def __next__(self) -> int:
                store.current_version = next(store.versions)
                return store.current_version

        return _Counter()


# -- OAuth: Microsoft identity platform v2.0 ----------------------------------------------

_AADSTS = {
    "invalid_grant": (
        70008,
        "The provided authorization code or refresh token has expired due to inactivity. "
        "Send a new interactive authorization request for this user and resource.",
    ),
    "invalid_client": (7000215, "Invalid client secret provided."),
    "invalid_request": (900144, "The request body must contain the required parameter."),
    "unsupported_grant_type": (70003, "The app requested an unsupported grant type."),
    "invalid_scope": (70011, "The provided value for the input parameter 'scope' is not valid."),
}


class DataverseOAuth(OAuthEmulator):
    """Microsoft identity platform semantics on the kit's OAuth server (module docstring)."""

    def __init__(self, *, resource: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.resource = resource.rstrip("/")

    def _grant_refresh(self, client: OAuthClient, params: dict[str, str]) -> dict[str, Any]:
        body = super()._grant_refresh(client, params)
        # A new refresh token on every use; the one used stays valid (not revoked).
        scope = self._refresh[params["refresh_token"]].scope
        body["refresh_token"] = self.mint_refresh_token(client.client_id, scope)
        return body

    async def _authorize(self, request: Request) -> Response:
        scopes = request.query_params.get("scope", "").split()
        if (
            f"{self.resource}/.default" not in scopes
            and request.query_params.get("client_id") in self.clients
        ):
            redirect = request.query_params.get("redirect_uri", "")
            if redirect in self.clients[request.query_params["client_id"]].redirect_uris:
                query = {"error": "invalid_scope", "error_description": _aadsts("invalid_scope")}
                if "state" in request.query_params:
                    query["state"] = request.query_params["state"]
                sep = "&" if "?" in redirect else "?"
                return Response(
                    status_code=302, headers={"location": redirect + sep + urlencode(query)}
                )
        return await super()._authorize(request)

    async def _token(self, request: Request) -> Response:
        response = await super()._token(request)
        if response.status_code < 400:
            return response
        body = orjson.loads(bytes(response.body))
        code = str(body.get("error"))
        number = _AADSTS.get(code, (90011, ""))[0]
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = self.clock.now().strftime("%Y-%m-%d %H:%M:%SZ")
        description = (
            f"{_aadsts(code)}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}"
            f"\r\nTimestamp: {stamp}"
        )
        headers = {
            k: v for k, v in response.headers.items() if k.lower() not in ("content-length",)
        }
        return JSONResponse(
            {
                "error": code,
                "error_description": description,
                "error_codes": [number],
                "timestamp": stamp,
                "trace_id": trace,
                "correlation_id": correlation,
                "error_uri": f"https://login.microsoftonline.com/error?code={number}",
            },
            status_code=response.status_code,
            headers=headers,
        )


def _aadsts(code: str) -> str:
    number, text = _AADSTS.get(code, (90011, "The request is invalid."))
    return f"AADSTS{number}: {text}"


def dataverse_oauth(
    *,
    clock: FakeClock | None = None,
    tenant: str = "organizations",
    resource: str = "https://dynamics365.emulator.test",
    access_token_lifetime: float = 3600.0,
) -> DataverseOAuth:
    """The identity platform for one tenant, issuing tokens for the ``resource`` org."""
    return DataverseOAuth(
        resource=resource,
        clock=clock,
        base_url="https://login.microsoftonline.emulator.test",
        authorize_path=f"/{tenant}/oauth2/v2.0/authorize",
        token_path=f"/{tenant}/oauth2/v2.0/token",
        access_token_lifetime=access_token_lifetime,
        rotate_refresh_tokens=False,
        reissue_refresh_token=False,
    )


# -- $filter: a small OData expression parser -----------------------------------------------


class QueryError(Exception):
    def __init__(self, message: str, code: str = QUERY_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


_TOKEN = re.compile(
    r"(?P<ws>\s+)|(?P<punct>[(),])"
    r"|(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    r"|(?P<datetime>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)"
    r"|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
)
_COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCTIONS = {"contains", "startswith", "endswith"}


@dataclass
class _Tok:
    kind: str  # punct | guid | datetime | number | ident | string
    text: str
    value: Any
    pos: int


def _tokenize(expr: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(expr):
        if expr[pos] == "'":
            start, pos, chars = pos, pos + 1, []
            while True:
                if pos >= len(expr):
                    # Reported where the input ran out (filter-rows.md example: 21 for
                    # "lastname eq 'O'Bryan'").
                    raise QueryError(
                        f"There is an unterminated literal at position {pos} in '{expr}'.", ""
                    )
                if expr[pos] == "'":
                    if pos + 1 < len(expr) and expr[pos + 1] == "'":
                        chars.append("'")
                        pos += 2
                        continue
                    pos += 1
                    break
                chars.append(expr[pos])
                pos += 1
            tokens.append(_Tok("string", expr[start:pos], "".join(chars), start))
            continue
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise QueryError(f"Syntax error at position {pos} in '{expr}'.", "")
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, match.group(), match.group(), pos))
        pos = match.end()
    return tokens


Row = dict[str, Any]
Predicate = Callable[[Row], bool]


class _FilterParser:
    def __init__(self, expr: str, table: Table) -> None:
        self.expr = expr
        self.table = table
        self.tokens = _tokenize(expr)
        self.i = 0

    def parse(self) -> Predicate:
        if not self.tokens:
            raise QueryError("The $filter expression is empty.")
        predicate = self._or()
        if self.i < len(self.tokens):
            tok = self.tokens[self.i]
            raise QueryError(f"Syntax error at position {tok.pos} in '{self.expr}'.", "")
        return predicate

    def _peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _take(self) -> _Tok:
        tok = self._peek()
        if tok is None:
            raise QueryError(
                f"Expression expected at position {len(self.expr)} in '{self.expr}'.", ""
            )
        self.i += 1
        return tok

    def _keyword(self, word: str) -> bool:
        tok = self._peek()
        if tok is not None and tok.kind == "ident" and tok.text == word:
            self.i += 1
            return True
        return False

    def _expect(self, text: str) -> None:
        tok = self._take()
        if tok.text != text:
            raise QueryError(f"'{text}' expected at position {tok.pos} in '{self.expr}'.", "")

    def _or(self) -> Predicate:
        left = self._and()
        while self._keyword("or"):
            right = self._and()
            left = (lambda a, b: lambda row: a(row) or b(row))(left, right)
        return left

    def _and(self) -> Predicate:
        left = self._not()
        while self._keyword("and"):
            right = self._not()
            left = (lambda a, b: lambda row: a(row) and b(row))(left, right)
        return left

    def _not(self) -> Predicate:
        if self._keyword("not"):
            inner = self._not()
            return lambda row: not inner(row)
        return self._primary()

    def _column(self, tok: _Tok) -> str:
        if tok.kind != "ident":
            raise QueryError(f"Syntax error at position {tok.pos} in '{self.expr}'.", "")
        if tok.text not in self.table.all_columns:
            raise QueryError(
                f"Could not find a property named '{tok.text}' on type "
                f"'Microsoft.Dynamics.CRM.{self.table.logical_name}'."
            )
        return tok.text

    def _primary(self) -> Predicate:
        tok = self._take()
        if tok.text == "(":
            inner = self._or()
            self._expect(")")
            return inner
        if tok.kind == "ident" and tok.text in _FUNCTIONS:
            self._expect("(")
            name = self._column(self._take())
            self._expect(",")
            value = self._take()
            self._expect(")")
            if value.kind != "string":
                raise QueryError(
                    f"No function signature for the function with name '{tok.text}' matches "
                    "the specified arguments."
                )
            if self.table.all_columns[name] not in ("string", "memo"):
                raise QueryError(f"The '{tok.text}' function needs a string column.")
            pattern = _like(
                value.value, prefix=tok.text != "startswith", suffix=tok.text != "endswith"
            )
            return lambda row: isinstance(row.get(name), str) and bool(pattern.fullmatch(row[name]))
        name = self._column(tok)
        op = self._take()
        if op.kind != "ident" or op.text not in _COMPARE:
            raise QueryError(f"Syntax error at position {op.pos} in '{self.expr}'.", "")
        operand = self._take()
        kind = self.table.all_columns[name]
        if operand.kind == "ident" and operand.text in self.table.all_columns:
            other = operand.text
            return lambda row: _compare(
                op.text, _coerce(kind, row.get(name)), _coerce(kind, row.get(other))
            )
        literal = self._literal(operand, kind, op.text)
        return lambda row: _compare(op.text, _coerce(kind, row.get(name)), literal)

    def _literal(self, tok: _Tok, kind: str, op: str) -> Any:
        if tok.kind == "ident" and tok.text == "null":
            return None
        expected = {
            "string": ("string",),
            "memo": ("string",),
            "int": ("number",),
            "money": ("number",),
            "decimal": ("number",),
            "bool": ("ident",),
            "datetime": ("datetime",),
            "date": ("datetime",),
            "guid": ("guid", "string"),
        }[kind]
        if tok.kind not in expected or (kind == "bool" and tok.text not in ("true", "false")):
            found = {
                "string": "Edm.String",
                "number": "Edm.Int32",
                "datetime": "Edm.DateTimeOffset",
                "guid": "Edm.Guid",
                "ident": "Edm.Boolean",
            }.get(tok.kind, "Edm.Untyped")
            raise QueryError(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{_edm(kind)}' and '{found}' for operator kind '{_OP_KIND[op]}'."
            )
        return _coerce(kind, tok.value if tok.kind == "string" else tok.text)


_OP_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}


def _edm(kind: str) -> str:
    return {
        "string": "Edm.String",
        "memo": "Edm.String",
        "int": "Edm.Int32",
        "money": "Edm.Decimal",
        "decimal": "Edm.Decimal",
        "bool": "Edm.Boolean",
        "datetime": "Edm.DateTimeOffset",
        "date": "Edm.Date",
        "guid": "Edm.Guid",
    }[kind]


def _like(value: str, *, prefix: bool, suffix: bool) -> re.Pattern[str]:
    """A T-SQL LIKE pattern (``%``, ``_``, ``[...]``, ``[^...]``) as a case-insensitive regex."""
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        elif ch == "[":
            end = value.find("]", i + 2)
            if end == -1:
                out.append(re.escape(ch))
            else:
                body = value[i + 1 : end]
                negate = body.startswith("^")
                body = body[1:] if negate else body
                out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(ch))
        i += 1
    pattern = ("(?s).*" if prefix else "(?s)") + "".join(out) + (".*" if suffix else "")
    return re.compile(pattern, re.IGNORECASE)


def _coerce(kind: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        if kind in ("string", "memo"):
            return str(value).casefold()
        if kind in ("int", "money", "decimal"):
            return Decimal(str(value))
        if kind == "bool":
            return value if isinstance(value, bool) else str(value) == "true"
        if kind == "guid":
            return str(value).lower()
        if kind == "date":
            return str(value)[:10]
        if kind == "datetime":
            if isinstance(value, datetime):
                return value.astimezone(UTC)
            text = str(value)
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, InvalidOperation):
        return None
    return value


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        return bool(
            {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op]
        )
    except TypeError:
        return False


# -- paging cookies -------------------------------------------------------------------------


def _cookie(page: int, table: Table, last: str, first: str, snapshot: int | None) -> str:
    """The ``$skiptoken`` value, shaped like Dataverse's (page-results.md)."""
    inner = (
        f'<cookie page="{page}"><{table.primary_id} last="{{{last.upper()}}}" '
        f'first="{{{first.upper()}}}" /></cookie>'
    )
    tracking = f' version="{snapshot}"' if snapshot is not None else ""
    return (
        f'<cookie pagenumber="{page + 1}" pagingcookie="{quote(inner, safe="")}" '
        f'istracking="{"True" if snapshot is not None else "False"}"{tracking} />'
    )


_COOKIE = re.compile(
    r'pagenumber="(\d+)" pagingcookie="([^"]*)" istracking="(True|False)"(?: version="(\d+)")?'
)


def _parse_cookie(token: str) -> tuple[int, str | None, int | None]:
    match = _COOKIE.search(token)
    if match is None:
        raise QueryError("The $skiptoken value is not valid.")
    inner = unquote(match.group(2))
    last = re.search(r'last="\{([0-9A-Fa-f-]{36})\}"', inner)
    version = int(match.group(4)) if match.group(4) else None
    return int(match.group(1)), last.group(1).lower() if last else None, version


def _link_query(params: list[tuple[str, str]]) -> str:
    return "&".join(f"{k}={quote(v, safe=chr(39) + '(),:$*')}" for k, v in params)


class Dynamics365Emulator(ProviderEmulator):
    """See the module docstring. ``Dynamics365Emulator(oauth=dataverse_oauth(...))``."""

    name = "dynamics365"
    organization_id = "4ef5b371-e89e-e711-8122-000d3aa2331c"
    user_id = "75c2dd85-e89e-e711-8122-000d3aa2331c"
    business_unit_id = "e2b9dd85-e89e-e711-8122-000d3aa2331c"

    def __init__(
        self,
        *,
        clock: FakeClock | None = None,
        oauth: OAuthEmulator | None = None,
        base_url: str | None = None,
        webhook_secret: str = "emulator-webhook-key",  # noqa: S107 - a test fixture value
        tenant: str = "organizations",
    ) -> None:
        super().__init__(clock=clock, oauth=oauth, base_url=base_url, webhook_secret=webhook_secret)
        self.store: VersionedRecordStore = VersionedRecordStore(self.clock, self.new_id)
        self.tenant = tenant
        self.change_tracking: dict[str, bool] = dict.fromkeys(TABLES, True)
        # Which service protection limit a rate-limit fault reports.
        self.throttle_kind = "requests"
        self.burst_remaining = 6000
        self.time_remaining_ms = 1_200_000.0

    # -- kit hooks -------------------------------------------------------------------------

    def new_id(self) -> str:
        return str(uuid.uuid4())

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{API}/WhoAmI", self._who_am_i, methods=["GET"]),
            Route(f"{API}/{{target}}", self._dispatch, methods=["GET", "POST", "PATCH", "DELETE"]),
        ]

    def error_response(self, status: int, code: str, message: str) -> Response:
        return JSONResponse(
            {"error": {"code": code, "message": message}},
            status_code=status,
            headers={"OData-Version": "4.0"},
        )

    def expired_token_response(self) -> Response:
        host = self.base_url.rstrip("/")
        return Response(
            status_code=401,
            headers={
                "WWW-Authenticate": (
                    f'Bearer error="invalid_token", error_description="Error during token '
                    f'validation!", authorization_uri=https://login.microsoftonline.com/'
                    f"{self.tenant}/oauth2/authorize, resource_id={host}/"
                )
            },
        )

    def rate_limited_response(self, retry_after: str | None, status: int) -> Response:
        code, message = THROTTLES[self.throttle_kind]
        response = self.error_response(status, code, message)
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        return response

    def server_error_response(self, status: int) -> Response:
        return self.error_response(status, "0x80040216", "An unexpected error occurred.")

    def disable_change_tracking(self, entity: str) -> None:
        self.change_tracking[entity] = False

    # -- webhooks ----------------------------------------------------------------------------

    def _webhook_auth(self, secret: str) -> tuple[str, list[tuple[str, str]]]:
        scheme, sep, rest = secret.partition(":")
        if sep and scheme in ("HttpHeader", "HttpQueryString"):
            return scheme, parse_qsl(rest, keep_blank_values=True)
        if sep and scheme == "WebhookKey":
            return "WebhookKey", [("code", rest)]
        return "WebhookKey", [("code", secret)]

    def sign_webhook(self, body: bytes, secret: str, url: str) -> dict[str, str]:
        headers: dict[str, str] = {}
        try:
            context = orjson.loads(body)
        except orjson.JSONDecodeError:
            context = {}
        if isinstance(context, dict):
            headers["x-ms-dynamics-organization"] = httpx_host(self.base_url)
            headers["x-ms-dynamics-entity-name"] = str(context.get("PrimaryEntityName", ""))
            headers["x-ms-dynamics-request-name"] = str(context.get("MessageName", ""))
            headers["x-ms-correlation-request-id"] = str(context.get("CorrelationId", ""))
        scheme, pairs = self._webhook_auth(secret)
        if scheme == "HttpHeader":
            headers.update(dict(pairs))
        return headers

    def build_webhook(
        self,
        payload: Any,
        *,
        url: str = "https://castiel.example/webhooks/in",
        secret: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> WebhookRequest:
        scheme, pairs = self._webhook_auth(secret or self.webhook_secret)
        if scheme in ("WebhookKey", "HttpQueryString"):
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(pairs)}"
        return super().build_webhook(payload, url=url, secret=secret, headers=headers)

    def webhook_payload(self, entity: str, record: StoredRecord, action: str) -> Any:
        return self.execution_context(entity, record, action)

    def execution_context(self, entity: str, record: StoredRecord, action: str) -> dict[str, Any]:
        """A ``RemoteExecutionContext`` as serialized for a webhook step on ``entity``
        (PostOperation, asynchronous), shaped like the example in use-webhooks.md."""
        table = TABLES[entity]
        message = {"created": "Create", "updated": "Update", "deleted": "Delete"}.get(
            action, "Update"
        )
        stamp = f"/Date({int(record.modified_at.timestamp() * 1000)})/"
        if message == "Delete":
            target: dict[str, Any] = {
                "__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts",
                "Id": record.id,
                "KeyAttributes": [],
                "LogicalName": entity,
                "Name": None,
                "RowVersion": None,
            }
        else:
            attributes = [{"key": k, "value": v} for k, v in record.data.items()]
            attributes.append({"key": table.primary_id, "value": record.id})
            attributes.append({"key": "modifiedon", "value": stamp})
            target = {
                "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                "Attributes": attributes,
                "EntityState": None,
                "FormattedValues": [],
                "Id": record.id,
                "KeyAttributes": [],
                "LogicalName": entity,
                "RelatedEntities": [],
                "RowVersion": None,
            }
        return {
            "BusinessUnitId": self.business_unit_id,
            "CorrelationId": str(uuid.uuid4()),
            "Depth": 1,
            "InitiatingUserId": self.user_id,
            "InputParameters": [{"key": "Target", "value": target}],
            "IsExecutingOffline": False,
            "IsInTransaction": False,
            "IsOfflinePlayback": False,
            "IsolationMode": 1,
            "MessageName": message,
            "Mode": 1,
            "OperationCreatedOn": stamp,
            "OperationId": str(uuid.uuid4()),
            "OrganizationId": self.organization_id,
            "OrganizationName": "OrgName",
            "OutputParameters": [],
            "OwningExtension": {
                "Id": str(uuid.uuid4()),
                "KeyAttributes": [],
                "LogicalName": "sdkmessageprocessingstep",
                "Name": None,
                "RowVersion": None,
            },
            "ParentContext": None,
            "PostEntityImages": [],
            "PreEntityImages": [],
            "PrimaryEntityId": record.id,
            "PrimaryEntityName": entity,
            "RequestId": None,
            "SecondaryEntityName": "none",
            "SharedVariables": [],
            "Stage": 40,
            "UserId": self.user_id,
        }

    # -- responses ----------------------------------------------------------------------------

    def _finish(self, response: Response) -> Response:
        self.burst_remaining = max(0, self.burst_remaining - 1)
        self.time_remaining_ms = max(0.0, self.time_remaining_ms - 12.5)
        response.headers["x-ms-ratelimit-burst-remaining-xrm-requests"] = str(self.burst_remaining)
        response.headers["x-ms-ratelimit-time-remaining-xrm-requests"] = (
            f"{self.time_remaining_ms:,.2f}"
        )
        response.headers["OData-Version"] = "4.0"
        return response

    def _json(
        self, body: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        return self._finish(
            Response(
                orjson.dumps(body),
                status_code=status,
                media_type="application/json; odata.metadata=minimal",
                headers=headers,
            )
        )

    def _error(self, status: int, code: str, message: str) -> Response:
        return self._finish(self.error_response(status, code, message))

    def _org(self) -> str:
        return self.base_url.rstrip("/")

    def _metadata(self) -> str:
        return f"{self._org()}{API}/$metadata"

    def _row(self, table: Table, record: StoredRecord, select: list[str] | None) -> Row:
        values = self._values(table, record)
        names = select or list(table.all_columns)
        row: Row = {"@odata.etag": self._etag(table, record)}
        for name in names:
            row[name] = values.get(name)
        row[table.primary_id] = record.id
        return row

    def _etag(self, table: Table, record: StoredRecord) -> str:
        return f'W/"{self.store[table.logical_name].version.get(record.id, 0)}"'

    def _values(self, table: Table, record: StoredRecord) -> Row:
        values: Row = {name: record.data.get(name) for name in table.columns}
        if table.logical_name == "contact":
            parts = [record.data.get("firstname"), record.data.get("lastname")]
            values["fullname"] = " ".join(p for p in parts if p) or None
        values[table.primary_id] = record.id
        values["createdon"] = iso(record.created_at)
        values["modifiedon"] = iso(record.modified_at)
        return values

    # -- endpoints ----------------------------------------------------------------------------

    async def _who_am_i(self, request: Request) -> Response:
        return self._json(
            {
                "@odata.context": f"{self._metadata()}#Microsoft.Dynamics.CRM.WhoAmIResponse",
                "BusinessUnitId": self.business_unit_id,
                "UserId": self.user_id,
                "OrganizationId": self.organization_id,
            }
        )

    async def _dispatch(self, request: Request) -> Response:
        target = request.path_params["target"]
        match = re.fullmatch(r"([A-Za-z_]+)(?:\(([^)]*)\))?", target)
        table = BY_SET.get(match.group(1)) if match else None
        if match is None or table is None:
            return self._error(404, QUERY_ERROR, f"Resource not found for the segment '{target}'.")
        key = match.group(2)
        try:
            if key is None:
                if request.method == "GET":
                    return await self._list(request, table)
                if request.method == "POST":
                    return await self._create(request, table)
                return self._error(
                    405, "0x80060888", "The requested operation isn't supported on a collection."
                )
            if not _GUID.fullmatch(key):
                return self._error(
                    400,
                    QUERY_ERROR,
                    f"Bad Request - Error in query syntax: '{key}' is not a valid key.",
                )
            record_id = key.lower()
            if request.method == "GET":
                return self._retrieve(request, table, record_id)
            if request.method == "PATCH":
                return await self._patch(request, table, record_id)
            if request.method == "DELETE":
                return self._delete(request, table, record_id)
            return self._error(405, QUERY_ERROR, "Method not allowed on a single record.")
        except QueryError as err:
            return self._error(400, err.code, err.message)

    def _select(self, table: Table, request: Request) -> list[str] | None:
        raw = request.query_params.get("$select")
        if raw is None:
            return None
        names = [n.strip() for n in raw.split(",") if n.strip()]
        for name in names:
            if name not in table.all_columns:
                raise QueryError(
                    f"Could not find a property named '{name}' on type "
                    f"'Microsoft.Dynamics.CRM.{table.logical_name}'."
                )
        return names

    def _missing(self, table: Table, record_id: str) -> Response:
        return self._error(
            404, NOT_FOUND, f"{table.logical_name} With Id = {record_id} Does Not Exist"
        )

    def _retrieve(self, request: Request, table: Table, record_id: str) -> Response:
        select = self._select(table, request)
        record = self.store[table.logical_name].get(record_id)
        if record is None:
            return self._missing(table, record_id)
        selection = f"({','.join(select)})" if select else ""
        body = {
            "@odata.context": f"{self._metadata()}#{table.entity_set}{selection}/$entity",
            **self._row(table, record, select),
        }
        return self._json(body, headers={"ETag": self._etag(table, record)})

    async def _body(self, request: Request, table: Table) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise QueryError("Invalid JSON. The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise QueryError("Invalid JSON. An object was expected.")
        for name in body:
            if name not in table.columns and name != table.primary_id:
                raise QueryError(
                    f"The property '{name}' does not exist on type "
                    f"'Microsoft.Dynamics.CRM.{table.logical_name}'. Make sure to only use "
                    "property names that are defined by the type."
                )
            if name in table.read_only:
                raise QueryError(f"The property '{name}' is read-only.", "0x80048d0a")
        return body

    def _prefer(self, request: Request) -> dict[str, str]:
        prefs: dict[str, str] = {}
        for header in request.headers.getlist("prefer"):
            for item in header.split(","):
                name, _, value = item.strip().partition("=")
                if name:
                    prefs[name.strip().lower()] = value.strip().strip('"')
        return prefs

    async def _create(self, request: Request, table: Table) -> Response:
        body = await self._body(request, table)
        store = self.store[table.logical_name]
        record_id = str(body.pop(table.primary_id, "") or "").lower() or None
        if record_id is not None and not _GUID.fullmatch(record_id):
            raise QueryError(f"'{record_id}' is not a valid Edm.Guid value.")
        if record_id is not None and store.get(record_id) is not None:
            return self._error(
                412, DUPLICATE_RECORD, "A record with matching key values already exists."
            )
        record = store.create(body, id=record_id)
        if (
            "return" in self._prefer(request)
            and self._prefer(request)["return"] == "representation"
        ):
            select = self._select(table, request)
            selection = f"({','.join(select)})" if select else ""
            row = {
                "@odata.context": f"{self._metadata()}#{table.entity_set}{selection}/$entity",
                **self._row(table, record, select),
            }
            return self._json(row, 201, {"Preference-Applied": "return=representation"})
        location = f"{self._org()}{API}/{table.entity_set}({record.id})"
        return self._finish(Response(status_code=204, headers={"OData-EntityId": location}))

    async def _patch(self, request: Request, table: Table, record_id: str) -> Response:
        body = await self._body(request, table)
        body.pop(table.primary_id, None)
        store = self.store[table.logical_name]
        record = store.get(record_id)
        if_match = request.headers.get("if-match")
        if_none_match = request.headers.get("if-none-match")
        if if_match is not None:
            if record is None:
                return self._missing(table, record_id)
            if if_match.strip() != "*" and if_match.strip() != self._etag(table, record):
                return self._error(
                    412,
                    CONCURRENCY_MISMATCH,
                    VERSION_MISMATCH,
                )
        if if_none_match is not None and if_none_match.strip() == "*" and record is not None:
            return self._error(
                412, DUPLICATE_RECORD, "A record with matching key values already exists."
            )
        if record is None:
            # PATCH without If-Match is an upsert: it creates the row.
            created = store.create(body, id=record_id)
            location = f"{self._org()}{API}/{table.entity_set}({created.id})"
            return self._finish(Response(status_code=204, headers={"OData-EntityId": location}))
        store.update(record_id, body)
        location = f"{self._org()}{API}/{table.entity_set}({record_id})"
        return self._finish(Response(status_code=204, headers={"OData-EntityId": location}))

    def _delete(self, request: Request, table: Table, record_id: str) -> Response:
        store = self.store[table.logical_name]
        record = store.get(record_id)
        if record is None:
            return self._missing(table, record_id)
        if_match = request.headers.get("if-match")
        if if_match is not None and if_match.strip() not in ("*", self._etag(table, record)):
            return self._error(
                412,
                CONCURRENCY_MISMATCH,
                VERSION_MISMATCH,
            )
        store.delete(record_id)
        return self._finish(Response(status_code=204))

    # -- queries -------------------------------------------------------------------------------

    async def _list(self, request: Request, table: Table) -> Response:
        q = request.query_params
        prefs = self._prefer(request)
        for name in q:
            if name.startswith("$") and name not in (
                "$select",
                "$filter",
                "$orderby",
                "$top",
                "$skiptoken",
                "$deltatoken",
                "$expand",
                "$count",
            ):
                raise QueryError(f"The query parameter {name} is not supported")
        if "$expand" in q or "$count" in q:
            raise QueryError("The emulator does not implement $expand or $count.")
        select = self._select(table, request)
        skiptoken = q.get("$skiptoken")
        cookie = _parse_cookie(skiptoken) if skiptoken else None
        deltatoken = q.get("$deltatoken")
        tracked = (
            "odata.track-changes" in prefs
            or deltatoken is not None
            or (cookie and cookie[2] is not None)
        )
        if tracked:
            for option in ("$filter", "$orderby", "$expand", "$top"):
                if option in q:
                    raise QueryError(
                        f'The "{option}" query parameter isn\'t supported when Change '
                        "Tracking is enabled."
                    )
            if not self.change_tracking.get(table.logical_name, False):
                raise QueryError(
                    f"Entity {table.logical_name} isn't enabled for change tracking.",
                    CHANGE_TRACKING_NOT_ENABLED,
                )
        size = MAX_PAGE_SIZE
        applied: list[str] = []
        if "odata.maxpagesize" in prefs:
            try:
                size = int(prefs["odata.maxpagesize"])
            except ValueError:
                raise QueryError("The odata.maxpagesize preference must be a number.") from None
            if not 1 <= size <= MAX_PAGE_SIZE:
                raise QueryError(f"The odata.maxpagesize preference must be 1..{MAX_PAGE_SIZE}.")
            applied.append(f"odata.maxpagesize={size}")
        elif "$top" in q:
            try:
                size = max(0, int(q["$top"]))
            except ValueError:
                raise QueryError("The $top value must be a number.") from None
        store = self.store[table.logical_name]
        snapshot = cookie[2] if cookie and cookie[2] is not None else self.store.current_version
        if deltatoken is not None:
            since = _parse_deltatoken(deltatoken)
            changed = [
                r
                for r in store.all(include_deleted=True)
                if since < store.version.get(r.id, 0) <= snapshot
            ]
            changed.sort(key=lambda r: (r.deleted, store.version.get(r.id, 0)))
            rows = changed
        elif tracked:
            applied.append("odata.track-changes")
            rows = [r for r in store.all() if store.version.get(r.id, 0) <= snapshot]
            rows.sort(key=lambda r: store.version.get(r.id, 0))
        else:
            rows = store.all()
            if "$filter" in q:
                predicate = _FilterParser(q["$filter"], table).parse()
                rows = [r for r in rows if predicate(self._values(table, r))]
            rows = self._order(table, rows, q.get("$orderby"))
        start = 0
        if cookie is not None:
            page_number, last_id, _ = cookie
            ids = [r.id for r in rows]
            start = ids.index(last_id) + 1 if last_id in ids else (page_number - 1) * size
        page = rows[start : start + size]
        more = start + size < len(rows)
        selection = f"({','.join(select)})" if select else ""
        context = f"{self._org()}{API}/$metadata#{table.entity_set}{selection}"
        if deltatoken is not None:
            context += "/$delta"
        value = [
            {
                "@odata.context": f"{self._org()}{API}/$metadata#{table.entity_set}/$deletedEntity",
                "id": r.id,
                "reason": "deleted",
            }
            if r.deleted
            else self._row(table, r, select)
            for r in page
        ]
        body: dict[str, Any] = {"@odata.context": context, "value": value}
        base_params = [(k, v) for k, v in q.multi_items() if k != "$skiptoken"]
        if more and page:
            token = _cookie(
                (cookie[0] if cookie else 1),
                table,
                page[-1].id,
                page[0].id,
                snapshot if tracked else None,
            )
            body["@odata.nextLink"] = f"{self._org()}{API}/{table.entity_set}?" + _link_query(
                [*base_params, ("$skiptoken", token)]
            )
        elif tracked:
            stamp = self.clock.now().strftime("%m/%d/%Y %H:%M:%S")
            params = [(k, v) for k, v in base_params if k != "$deltatoken"]
            params.append(("$deltatoken", f"{snapshot}!{stamp}"))
            body["@odata.deltaLink"] = (
                f"{self._org()}{API}/{table.entity_set}?{_link_query(params)}"
            )
        headers = {"Preference-Applied": ",".join(applied)} if applied else None
        return self._json(body, headers=headers)

    def _order(
        self, table: Table, rows: list[StoredRecord], orderby: str | None
    ) -> list[StoredRecord]:
        keys: list[tuple[str, bool]] = []
        for part in (orderby or "").split(","):
            words = part.split()
            if not words:
                continue
            if len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
                raise QueryError(f"Syntax error in $orderby '{orderby}'.", "")
            if words[0] not in table.all_columns:
                raise QueryError(
                    f"Could not find a property named '{words[0]}' on type "
                    f"'Microsoft.Dynamics.CRM.{table.logical_name}'."
                )
            keys.append((words[0], len(words) == 2 and words[1] == "desc"))
        # The primary key last makes the order total (paging cookies rely on it).
        if table.primary_id not in [k for k, _ in keys]:
            keys.append((table.primary_id, False))
        ordered = list(rows)
        for name, desc in reversed(keys):
            ordered.sort(key=self._column_key(table, name), reverse=desc)
        return ordered

    def _column_key(self, table: Table, name: str) -> Callable[[StoredRecord], tuple[int, Any]]:
        kind = table.all_columns[name]
        return lambda r: _sort_key(_coerce(kind, self._values(table, r).get(name)))


def _sort_key(value: Any) -> tuple[int, Any]:
    # Nulls sort first ascending, as in SQL Server.
    return (0, "") if value is None else (1, value)


def _parse_deltatoken(token: str) -> int:
    version, sep, _ = token.partition("!")
    if not sep or not version.isdigit():
        raise QueryError("The $deltatoken value is not valid.")
    return int(version)


def httpx_host(url: str) -> str:
    return re.sub(r"^https?://", "", url).split("/")[0]


__all__ = [
    "API",
    "TABLES",
    "DataverseOAuth",
    "Dynamics365Emulator",
    "dataverse_oauth",
]
