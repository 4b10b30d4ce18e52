"""An emulator of the HubSpot CRM v3 objects API, its OAuth server, and its webhooks.

Written from HubSpot's developer documentation (developers.hubspot.com), not from the
adapter:

- OAuth (:func:`hubspot_oauth`): ``/oauth/authorize`` and ``POST /oauth/v1/token``,
  form-encoded with ``client_id``/``client_secret`` in the body (client_secret_post only);
  ``expires_in`` 1800; a refresh returns the same refresh token (it does not rotate);
  PKCE optional.
- ``GET /crm/v3/objects/{type}``: ``limit`` (default 10, at most 100), ``after``,
  ``properties`` (comma-separated), ``archived``; ``{results, paging.next.{after, link}}``.
  Objects ``{id, properties, createdAt, updatedAt, archived, archivedAt?}``; every object
  carries ``hs_object_id``, ``createdate`` and its last-modified property
  (``lastmodifieddate`` for contacts, ``hs_lastmodifieddate`` otherwise), ISO 8601 with
  milliseconds and ``Z``.
- ``POST .../search``: ``filterGroups`` (OR of ANDed ``filters``; at most 5 groups, 10
  filters a group, 25 in all), operators EQ NEQ LT LTE GT GTE BETWEEN IN NOT_IN
  HAS_PROPERTY NOT_HAS_PROPERTY CONTAINS_TOKEN NOT_CONTAINS_TOKEN, one ``sorts`` entry,
  ``limit`` at most 200, ``after`` (an offset); 10,000 results per query at most: an
  ``after`` reaching past them is a 400. Records with equal sort values come back in no
  particular order (here: a hash of the id, so nobody relies on id order). Archived
  records are not searchable. Date operands are epoch milliseconds.
- ``POST``/``GET``/``PATCH``/``DELETE`` single objects (201, 200, 200, 204); batch
  ``read``/``create``/``update``/``archive`` with at most 100 inputs (207 with ``errors``
  when some ids are missing).
- Errors ``{"status": "error", "message", "correlationId", "category"}`` (categories
  VALIDATION_ERROR, OBJECT_NOT_FOUND, INVALID_AUTHENTICATION, RATE_LIMITS); 429 bodies add
  ``errorType: RATE_LIMIT`` and ``policyName``. Every response carries the
  ``X-HubSpot-RateLimit-*`` headers; ``enforce_rate_limits`` turns the 100-per-10-seconds
  window into real 429s.
- Webhooks: a JSON array of events signed v1 (``X-HubSpot-Signature``) and v3
  (``X-HubSpot-Signature-v3`` + ``X-HubSpot-Request-Timestamp``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from castiel_sync.testing._kit import FakeClock, ProviderEmulator, StoredRecord
from castiel_sync.testing.oauth import CLIENT_SECRET_POST, OAuthEmulator

LIST_MAX = 100
LIST_DEFAULT = 10
SEARCH_MAX = 200
SEARCH_DEFAULT = 10
SEARCH_CAP = 10_000
BATCH_MAX = 100
MAX_GROUPS, MAX_PER_GROUP, MAX_FILTERS = 5, 10, 25
RATE_MAX, RATE_INTERVAL_MS = 100, 10_000
DAILY = 500_000

OBJECT_TYPES = {
    # type -> (last-modified property, webhook object name, default properties)
    "companies": ("hs_lastmodifieddate", "company", ("name", "domain")),
    "contacts": ("lastmodifieddate", "contact", ("email", "firstname", "lastname")),
    "deals": (
        "hs_lastmodifieddate",
        "deal",
        ("amount", "closedate", "dealname", "dealstage", "pipeline"),
    ),
}
_RESERVED = ("hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate")


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def millis(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def hubspot_oauth(clock: FakeClock | None = None, **kwargs: Any) -> OAuthEmulator:
    """HubSpot's authorization server, by its documented rules."""
    return OAuthEmulator(
        clock=clock,
        base_url=kwargs.pop("base_url", "https://api.hubapi.emulator.test"),
        authorize_path="/oauth/authorize",
        token_path="/oauth/v1/token",  # noqa: S106 - a URL path
        access_token_lifetime=1800.0,
        rotate_refresh_tokens=False,
        reissue_refresh_token=True,
        require_pkce=False,
        **kwargs,
    )


class _BadRequest(Exception):
    def __init__(self, message: str, category: str = "VALIDATION_ERROR", status: int = 400):
        super().__init__(message)
        self.message, self.category, self.status = message, category, status


class HubSpotEmulator(ProviderEmulator):
    name = "hubspot"
    public_paths = ("/oauth",)

    def __init__(self, *, enforce_rate_limits: bool = False, **kwargs: Any) -> None:
        self._ids = itertools.count(101)
        self._events = itertools.count(1)
        self.portal_id = 62515
        self.app_id = 54321
        self.enforce_rate_limits = enforce_rate_limits
        self.daily_used = 0
        self._window: list[float] = []
        # policyName of the next fault 429s (default TEN_SECONDLY_ROLLING).
        self.next_policies: list[str] = []
        super().__init__(**kwargs)

    @classmethod
    def with_oauth(
        cls,
        client_id: str = "hubspot-client-id",
        client_secret: str = "hubspot-client-secret",  # noqa: S107 - a test value
        redirect_uri: str = "https://castiel.example/oauth/callback",
        **kwargs: Any,
    ) -> HubSpotEmulator:
        oauth = hubspot_oauth(kwargs.pop("clock", None))
        oauth.register_client(client_id, client_secret, [redirect_uri], {CLIENT_SECRET_POST})
        # The app's client secret is what signs webhooks.
        return cls(oauth=oauth, webhook_secret=client_secret, **kwargs)

    def issue_token(self, lifetime: float | None = 1800.0) -> str:
        """Access tokens live 30 minutes (``expires_in`` 1800)."""
        return super().issue_token(lifetime)

    def new_id(self) -> str:
        return str(next(self._ids))

    def routes(self) -> list[BaseRoute]:
        base = "/crm/v3/objects/{type}"
        return [
            Route(base, self._list, methods=["GET"]),
            Route(base, self._create, methods=["POST"]),
            Route(base + "/search", self._search, methods=["POST"]),
            Route(base + "/batch/{op}", self._batch, methods=["POST"]),
            Route(base + "/{id}", self._one, methods=["GET", "PATCH", "DELETE"]),
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            self.oauth is not None
            and scope["type"] == "http"
            and scope["path"].startswith("/oauth")
        ):
            await self.oauth(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    # -- error format and limits -------------------------------------------------------

    def error_response(self, status: int, code: str, message: str) -> Response:
        body = {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": code,
        }
        return self._reply(body, status)

    def expired_token_response(self) -> Response:
        return self.error_response(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication",
        )

    def rate_limited_response(self, retry_after: str | None, status: int) -> Response:
        policy = self.next_policies.pop(0) if self.next_policies else "TEN_SECONDLY_ROLLING"
        body = {
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "requestId": str(uuid.uuid4()),
        }
        response = self._reply(body, status)
        if retry_after is not None:
            response.headers["Retry-After"] = retry_after
        if policy == "DAILY":
            response.headers["X-HubSpot-RateLimit-Daily-Remaining"] = "0"
        else:
            response.headers["X-HubSpot-RateLimit-Remaining"] = "0"
        return response

    def server_error_response(self, status: int) -> Response:
        return self.error_response(status, "INTERNAL_ERROR", "internal error")

    def _reply(self, body: Any, status: int = 200) -> Response:
        now = self.clock.monotonic()
        self._window = [t for t in self._window if now - t < RATE_INTERVAL_MS / 1000]
        headers = {
            "X-HubSpot-RateLimit-Daily": str(DAILY),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, DAILY - self.daily_used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(RATE_INTERVAL_MS),
            "X-HubSpot-RateLimit-Max": str(RATE_MAX),
            "X-HubSpot-RateLimit-Remaining": str(max(0, RATE_MAX - len(self._window))),
        }
        if status == 204:
            return Response(status_code=204, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)

    def _count(self) -> Response | None:
        """Count a request against the limits; a 429 when enforced and exceeded."""
        now = self.clock.monotonic()
        self._window = [t for t in self._window if now - t < RATE_INTERVAL_MS / 1000]
        if self.enforce_rate_limits and len(self._window) >= RATE_MAX:
            self.next_policies.insert(0, "TEN_SECONDLY_ROLLING")
            return self.rate_limited_response(None, 429)
        self._window.append(now)
        self.daily_used += 1
        return None

    # -- rendering ---------------------------------------------------------------------

    def _type(self, request: Request) -> str:
        kind = request.path_params["type"]
        if kind not in OBJECT_TYPES:
            raise _BadRequest(f"Unable to infer object type from: {kind}", "OBJECT_NOT_FOUND", 404)
        return kind

    def properties_of(self, kind: str, record: StoredRecord) -> dict[str, Any]:
        """Every property of ``record``, the maintained ones included."""
        modified = OBJECT_TYPES[kind][0]
        return {
            **{k: (None if v is None else str(v)) for k, v in record.data.items()},
            "hs_object_id": record.id,
            "createdate": iso(record.created_at),
            modified: iso(record.modified_at),
        }

    def render(self, kind: str, record: StoredRecord, wanted: list[str] | None) -> dict[str, Any]:
        props = self.properties_of(kind, record)
        names = list(wanted) if wanted else list(OBJECT_TYPES[kind][2])
        names += ["hs_object_id", "createdate", OBJECT_TYPES[kind][0]]
        out: dict[str, Any] = {
            "id": record.id,
            "properties": {n: props.get(n) for n in dict.fromkeys(names)},
            "createdAt": iso(record.created_at),
            "updatedAt": iso(record.modified_at),
            "archived": record.deleted,
        }
        if record.deleted:
            out["archivedAt"] = iso(record.modified_at)
        return out

    def _is_property(self, kind: str, name: Any) -> bool:
        if not isinstance(name, str):
            return False
        if name in _RESERVED or name in OBJECT_TYPES[kind][2]:
            return True
        return any(name in r.data for r in self.store[kind].all(include_deleted=True))

    def _value(self, kind: str, record: StoredRecord, name: str) -> Any:
        """One property's value; dates as epoch ms (how search compares them)."""
        if name == OBJECT_TYPES[kind][0]:
            return millis(record.modified_at)
        if name == "createdate":
            return millis(record.created_at)
        if name == "hs_object_id":
            return int(record.id)
        return record.data.get(name)

    # -- endpoints ---------------------------------------------------------------------

    async def _guard(self, request: Request, handler: Callable[[Request], Any]) -> Response:
        limited = self._count()
        if limited is not None:
            return limited
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except _BadRequest as err:
            return self.error_response(err.status, err.category, err.message)

    async def _json_body(self, request: Request) -> dict[str, Any]:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise _BadRequest("Invalid input JSON on line 1") from None
        if not isinstance(body, dict):
            raise _BadRequest("Invalid input JSON: expected an object")
        return body

    def _props_input(self, kind: str, props: Any) -> dict[str, Any]:
        if not isinstance(props, dict):
            raise _BadRequest("Property values were not valid: properties must be an object")
        bad = [k for k in props if k in _RESERVED[1:] or not isinstance(k, str)]
        if bad:
            raise _BadRequest(f"Property values were not valid: {bad[0]} is read-only")
        return {
            k: (None if v in (None, "") else str(v))
            for k, v in props.items()
            if k != "hs_object_id"
        }

    async def _list(self, request: Request) -> Response:
        return await self._guard(request, self._do_list)

    async def _do_list(self, request: Request) -> Response:
        kind = self._type(request)
        q = request.query_params
        try:
            limit = int(q.get("limit", LIST_DEFAULT))
        except ValueError:
            raise _BadRequest("limit must be an integer") from None
        if not 1 <= limit <= LIST_MAX:
            raise _BadRequest(f"limit must be between 1 and {LIST_MAX}")
        wanted = [p for v in q.getlist("properties") for p in v.split(",") if p]
        archived = q.get("archived", "false") == "true"
        rows = [r for r in self.store[kind].all(include_deleted=True) if r.deleted == archived]
        rows.sort(key=lambda r: int(r.id))
        if "after" in q:
            if not q["after"].isdigit():
                raise _BadRequest("after must be a cursor from a previous page")
            rows = [r for r in rows if int(r.id) >= int(q["after"])]
        page, rest = rows[:limit], rows[limit:]
        body: dict[str, Any] = {"results": [self.render(kind, r, wanted) for r in page]}
        if rest:
            after = rest[0].id
            link = f"{self.base_url}/crm/v3/objects/{kind}?after={after}&limit={limit}"
            body["paging"] = {"next": {"after": after, "link": link}}
        return self._reply(body)

    async def _search(self, request: Request) -> Response:
        return await self._guard(request, self._do_search)

    async def _do_search(self, request: Request) -> Response:
        kind = self._type(request)
        body = await self._json_body(request)
        limit = body.get("limit", SEARCH_DEFAULT)
        if not isinstance(limit, int) or not 1 <= limit <= SEARCH_MAX:
            raise _BadRequest(f"limit must be between 1 and {SEARCH_MAX}")
        after = body.get("after", "0") or "0"
        if not str(after).isdigit():
            raise _BadRequest("after must be an integer offset")
        offset = int(after)
        if offset + limit > SEARCH_CAP:
            # "The search endpoints are limited to 10,000 total results for any given query.
            # Attempting to page beyond 10,000 will result in a 400 error."
            raise _BadRequest("Paging beyond 10,000 results is not allowed")
        groups = body.get("filterGroups") or []
        if not isinstance(groups, list) or len(groups) > MAX_GROUPS:
            raise _BadRequest(f"at most {MAX_GROUPS} filterGroups")
        known = _Known(lambda name: self._is_property(kind, name))
        parsed: list[list[tuple[str, str, Any]]] = []
        total_filters = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list) or len(filters) > MAX_PER_GROUP:
                raise _BadRequest(f"each filterGroup takes 1 to {MAX_PER_GROUP} filters")
            total_filters += len(filters)
            parsed.append([self._parse_filter(f, known) for f in filters])
        if total_filters > MAX_FILTERS:
            raise _BadRequest(f"at most {MAX_FILTERS} filters")
        sorts = body.get("sorts") or []
        if not isinstance(sorts, list) or len(sorts) > 1:
            raise _BadRequest("only one sort is allowed")
        wanted = body.get("properties") or None
        rows = self.store[kind].all()
        if parsed:
            rows = [
                r
                for r in rows
                if any(all(_match(self._value(kind, r, f[0]), f) for f in g) for g in parsed)
            ]
        if sorts:
            sort = sorts[0] if isinstance(sorts[0], dict) else {"propertyName": sorts[0]}
            name = sort.get("propertyName")
            if not isinstance(name, str) or name not in known:
                raise _BadRequest(f"There was a problem with the request: unknown property {name}")
            reverse = sort.get("direction", "ASCENDING") == "DESCENDING"
            rows.sort(key=lambda r: _tiebreak(r.id))
            rows.sort(key=lambda r: _sort_key(self._value(kind, r, name)), reverse=reverse)
        else:
            rows.sort(key=lambda r: int(r.id))
        visible = rows[:SEARCH_CAP]
        page = visible[offset : offset + limit]
        out: dict[str, Any] = {
            "total": len(rows),
            "results": [self.render(kind, r, wanted) for r in page],
        }
        if offset + limit < len(visible):
            out["paging"] = {"next": {"after": str(offset + limit)}}
        return self._reply(out)

    def _parse_filter(self, item: Any, known: _Known) -> tuple[str, str, Any]:
        if not isinstance(item, dict):
            raise _BadRequest("a filter must be an object")
        name, op = item.get("propertyName"), item.get("operator", "EQ")
        if not isinstance(name, str) or name not in known:
            raise _BadRequest(f"There was a problem with the request: unknown property {name}")
        if op in ("IN", "NOT_IN"):
            values = item.get("values")
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise _BadRequest(f"{op} takes 'values', a list of strings")
            return name, op, values
        if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            return name, op, None
        if op not in (
            "EQ",
            "NEQ",
            "LT",
            "LTE",
            "GT",
            "GTE",
            "BETWEEN",
            "CONTAINS_TOKEN",
            "NOT_CONTAINS_TOKEN",
        ):
            raise _BadRequest(f"Unknown operator {op}")
        value = item.get("value")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise _BadRequest(f"the {op} filter on {name} needs a scalar 'value'")
        if op == "BETWEEN":
            return name, op, (str(value), str(item.get("highValue")))
        return name, op, str(value)

    async def _create(self, request: Request) -> Response:
        return await self._guard(request, self._do_create)

    async def _do_create(self, request: Request) -> Response:
        kind = self._type(request)
        body = await self._json_body(request)
        record = self.store[kind].create(self._props_input(kind, body.get("properties")))
        return self._reply(self.render(kind, record, list(record.data)), 201)

    async def _one(self, request: Request) -> Response:
        return await self._guard(request, self._do_one)

    async def _do_one(self, request: Request) -> Response:
        kind = self._type(request)
        store = self.store[kind]
        record_id = request.path_params["id"]
        archived = request.query_params.get("archived") == "true"
        record = store.get(record_id, include_deleted=archived)
        if record is None or (archived and not record.deleted):
            raise _BadRequest("resource not found", "OBJECT_NOT_FOUND", 404)
        if request.method == "DELETE":
            store.delete(record.id)
            return self._reply(None, 204)
        if request.method == "PATCH":
            body = await self._json_body(request)
            store.update(record.id, self._props_input(kind, body.get("properties")))
            return self._reply(self.render(kind, record, list(record.data)))
        wanted = [p for v in request.query_params.getlist("properties") for p in v.split(",") if p]
        return self._reply(self.render(kind, record, wanted))

    async def _batch(self, request: Request) -> Response:
        return await self._guard(request, self._do_batch)

    async def _do_batch(self, request: Request) -> Response:
        kind = self._type(request)
        op = request.path_params["op"]
        if op not in ("read", "create", "update", "archive"):
            raise _BadRequest(f"unknown batch operation {op}", "OBJECT_NOT_FOUND", 404)
        body = await self._json_body(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise _BadRequest("inputs must be a list of objects")
        if len(inputs) > BATCH_MAX:
            raise _BadRequest(f"Batch input is limited to {BATCH_MAX} inputs")
        store = self.store[kind]
        started = iso(self.clock.now())
        if op == "create":
            records = [store.create(self._props_input(kind, i.get("properties"))) for i in inputs]
            results = [self.render(kind, r, list(r.data)) for r in records]
            return self._batch_reply(kind, results, [], started, 201)
        ids = [str(i.get("id")) for i in inputs]
        missing = [rid for rid in ids if store.get(rid) is None]
        if op == "archive":
            for rid in ids:
                if rid not in missing:
                    store.delete(rid)
            return self._reply(None, 204)
        if op == "update":
            changes = [self._props_input(kind, i.get("properties")) for i in inputs]
            results = [
                self.render(kind, store.update(rid, change), list(change))
                for rid, change in zip(ids, changes, strict=True)
                if rid not in missing
            ]
        else:
            wanted = body.get("properties") or None
            found = (store.get(rid) for rid in dict.fromkeys(ids))
            results = [self.render(kind, record, wanted) for record in found if record is not None]
        return self._batch_reply(kind, results, missing, started, 200)

    def _batch_reply(
        self, kind: str, results: list[Any], missing: list[str], started: str, status: int
    ) -> Response:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": iso(self.clock.now()),
        }
        if missing:
            body["numErrors"] = 1
            body["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Could not get some {kind} objects, they may be deleted "
                    "or not exist.",
                    "context": {"ids": missing},
                }
            ]
            status = 207
        return self._reply(body, status)

    # -- webhooks ------------------------------------------------------------------------

    def webhook_event(
        self, entity: str, record: StoredRecord, action: str, **extra: Any
    ) -> dict[str, Any]:
        change = {
            "created": "creation",
            "updated": "propertyChange",
            "deleted": "deletion",
        }.get(action, action)
        event: dict[str, Any] = {
            "eventId": next(self._events),
            "subscriptionId": 12345,
            "portalId": self.portal_id,
            "appId": self.app_id,
            "occurredAt": millis(record.modified_at),
            "subscriptionType": f"{OBJECT_TYPES[entity][1]}.{change}",
            "attemptNumber": 0,
            "objectId": int(record.id),
            "changeSource": "CRM",
        }
        if change == "propertyChange" and record.data:
            name, value = next(iter(record.data.items()))
            event.update(propertyName=name, propertyValue=value)
        return {**event, **extra}

    def webhook_payload(self, entity: str, record: StoredRecord, action: str) -> Any:
        return [self.webhook_event(entity, record, action)]

    def sign_webhook(self, body: bytes, secret: str, url: str) -> dict[str, str]:
        stamp = str(millis(self.clock.now()))
        mac = hmac.new(
            secret.encode(), b"POST" + url.encode() + body + stamp.encode(), hashlib.sha256
        )
        return {
            "X-HubSpot-Signature-Version": "v1",
            "X-HubSpot-Signature": hashlib.sha256(secret.encode() + body).hexdigest(),
            "X-HubSpot-Signature-v3": base64.b64encode(mac.digest()).decode(),
            "X-HubSpot-Request-Timestamp": stamp,
        }


def _tiebreak(record_id: str) -> bytes:
    return hashlib.sha1(record_id.encode(), usedforsecurity=False).digest()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _as_comparable(value: Any) -> tuple[int, Any]:
    """Dates (ISO strings) compare as epoch ms, numbers as numbers, the rest as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 0, value
    if isinstance(value, str) and len(value) >= 10 and value[4:5] == "-" and value[7:8] == "-":
        try:
            return 0, millis(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    number = _number(value)
    if number is not None:
        return 0, number
    return 1, str(value).lower()


def _sort_key(value: Any) -> tuple[int, Any]:
    if value in (None, ""):
        return 2, ""
    return _as_comparable(value)


class _Known:
    """``name in known``: whether a property exists, asked lazily."""

    def __init__(self, check: Callable[[Any], bool]) -> None:
        self._check = check

    def __contains__(self, name: object) -> bool:
        return self._check(name)


def _match(value: Any, spec: tuple[str, str, Any]) -> bool:
    _, op, operand = spec
    present = value not in (None, "")
    if op == "HAS_PROPERTY":
        return present
    if op == "NOT_HAS_PROPERTY":
        return not present
    if op == "IN":
        return present and str(value).lower() in {v.lower() for v in operand}
    if op == "NOT_IN":
        return not present or str(value).lower() not in {v.lower() for v in operand}
    if op in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
        pattern = operand.lower()
        tokens = str(value).lower().replace("@", " ").replace(".", " ").split() if present else []
        if pattern.endswith("*"):
            hit = any(t.startswith(pattern[:-1]) for t in tokens)
        else:
            hit = pattern in tokens or (present and pattern == str(value).lower())
        return hit if op == "CONTAINS_TOKEN" else not hit
    if not present:
        return op == "NEQ"
    left, right = _as_comparable(value), _as_comparable(operand)
    if op == "BETWEEN":
        return left[0] == right[0] and right[1] <= left[1] <= _as_comparable(operand[1])[1]
    if left[0] != right[0]:
        return op == "NEQ"
    a, b = left[1], right[1]
    return {
        "EQ": a == b,
        "NEQ": a != b,
        "LT": a < b,
        "LTE": a <= b,
        "GT": a > b,
        "GTE": a >= b,
    }[op]
