"""The HubSpot adapter: CRM v3 objects (companies, contacts, deals).

Wire facts (developers.hubspot.com, CRM v3 objects / search / OAuth guides):

- OAuth: authorize ``https://app.hubspot.com/oauth/authorize``; token
  ``POST https://api.hubapi.com/oauth/v1/token`` form-encoded with ``client_id`` and
  ``client_secret`` in the body. Access tokens are short-lived (``expires_in``; 30 minutes
  since the changelog "Expiration of OAuth access tokens is changing"); the refresh
  token is stored and reused ("store the refresh token ... and use it to generate a new
  access token"). The host refreshes through ``token_refresher`` on a 401.
- List: ``GET /crm/v3/objects/{type}?limit=&after=&properties=&archived=`` ->
  ``{results, paging: {next: {after, link}}}``; ``limit`` at most 100. Records are
  ``{id, properties, createdAt, updatedAt, archived, archivedAt?}``; ``archived=true``
  lists the archived (deleted) ones.
- Search: ``POST /crm/v3/objects/{type}/search`` with ``filterGroups``, ``sorts``,
  ``properties``, ``limit`` (at most 200) and ``after``; a query yields at most 10,000
  results. Incremental fetches never page with ``after``: every page is a new search from
  the last modified date seen (keyset), so neither the cap nor records that move while we
  read (an offset shifts when an earlier record is modified) can hide anything. Equal
  timestamps are de-duplicated by id; a run of equal timestamps longer than a page is
  read in ``hs_object_id`` order (one sort per search).
- ``GET|PATCH|DELETE /crm/v3/objects/{type}/{id}``; ``POST /crm/v3/objects/{type}`` ->
  201; DELETE archives (204). Batch ``/batch/read|create|update``, 100 inputs each.
- Errors ``{status: "error", message, correlationId, category}``; 429 bodies name a
  ``policyName`` (``TEN_SECONDLY_ROLLING``, ``SECONDLY``, ``DAILY``); quota headers
  ``X-HubSpot-RateLimit-*``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

import httpx

from castiel_sync.adapters.hubspot import _webhooks as wh
from castiel_sync.adapters.hubspot._entities import (
    ID_PROPERTY,
    EntitySpec,
    entity_spec,
    requested_properties,
)
from castiel_sync.adapters.hubspot._search import (
    MAX_SEARCH_LIMIT,
    ScanState,
    property_name,
    render_filters,
    to_millis,
)
from castiel_sync.sdk import (
    AdapterError,
    AdapterValidationError,
    AuthError,
    CursorParamPaginator,
    ExternalRecord,
    FetchOptions,
    FetchResult,
    HttpAdapter,
    NotFoundError,
    NotSupportedError,
    RateLimit,
    RateLimitedError,
    TokenBucket,
    TransientError,
    WebhookEvent,
    WebhookRegistration,
    WebhookRequest,
    parse_timestamp,
)

AUTHORIZE_URL = "https://app.hubspot.com/oauth/authorize"
TOKEN_URL = "https://api.hubapi.com/oauth/v1/token"  # noqa: S105 - a URL
API_BASE_URL = "https://api.hubapi.com"
OBJECTS = "/crm/v3/objects"

MAX_LIST_LIMIT = 100
MAX_BATCH = 100
# A DAILY policy resets at midnight in the portal's time zone, which we do not know: hand
# the job back to the queue for an hour rather than retry within it.
DAILY_RETRY_AFTER = 3600.0
_POLICY_WAIT = {"SECONDLY": 1.0, "TEN_SECONDLY_ROLLING": 10.0}
_TRANSIENT_STATUSES = frozenset({423, 477})  # Locked; Migration in progress


def parse_hs_datetime(value: Any) -> datetime | None:
    """``2019-10-30T03:30:17.883Z`` (or epoch milliseconds) as an aware datetime."""
    return parse_timestamp(value, epoch_millis=True)


def hs_error(response: httpx.Response) -> dict[str, Any]:
    body = HttpAdapter.json_body(response)
    return body if isinstance(body, dict) else {}


def _chunks(items: list[Any], size: int = MAX_BATCH) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _properties_of(data: dict[str, Any]) -> dict[str, Any]:
    """The properties to write: ``{"properties": {...}}`` (the mapped HubSpot shape) or
    a flat mapping of property names."""
    nested = data.get("properties")
    props = nested if isinstance(nested, dict) else data
    for name in props:
        property_name(name)
    return {k: v for k, v in props.items() if k not in (ID_PROPERTY,)}


class HubSpotAdapter(HttpAdapter):
    """HubSpot CRM: companies, contacts and deals, both ways."""

    provider_id: ClassVar[str] = "hubspot"
    default_base_url: ClassVar[str | None] = API_BASE_URL
    test_connection_path: ClassVar[str | None] = f"{OBJECTS}/contacts?limit=1"
    find_by_fetch: ClassVar[bool] = True  # eq filters are rendered into the query
    # Catalog: 100 requests per 10 seconds per app and portal.
    default_rate_limit: ClassVar[RateLimit | None] = RateLimit(requests_per_second=10, burst=100)
    # Changelog "CRM Search API Rate Limit Increase": four search requests per second.
    search_rate_limit: ClassVar[RateLimit] = RateLimit(requests_per_second=4, burst=4)
    rate_limit_headers: ClassVar[dict[str, tuple[str, ...]]] = {
        "daily": ("X-HubSpot-RateLimit-Daily",),
        "daily_remaining": ("X-HubSpot-RateLimit-Daily-Remaining",),
        "interval_ms": ("X-HubSpot-RateLimit-Interval-Milliseconds",),
        "limit": ("X-HubSpot-RateLimit-Max",),
        "remaining": ("X-HubSpot-RateLimit-Remaining",),
        "secondly": ("X-HubSpot-RateLimit-Secondly",),
        "secondly_remaining": ("X-HubSpot-RateLimit-Secondly-Remaining",),
    }

    def __init__(self) -> None:
        super().__init__()
        self._search_limiter: TokenBucket | None = None

    async def connect(self, credentials: Any) -> None:
        await super().connect(credentials)
        if self.rate_limit is not None:
            self._limiter = TokenBucket(self.rate_limit, self.clock)
        self._search_limiter = TokenBucket(self.search_rate_limit, self.clock)

    # -- classification ----------------------------------------------------------------

    def classify(self, response: httpx.Response) -> AdapterError | None:
        status = response.status_code
        if status < 400:
            return None
        body = hs_error(response)
        category = str(body.get("category") or body.get("errorType") or "")
        message = str(body.get("message") or "")
        detail = self.redact(
            f"{category or status}: {message} (correlationId {body.get('correlationId')})"[:500]
        )
        kw: dict[str, Any] = {"detail": detail, "status_code": status}
        if status == 401:
            return AuthError("HubSpot rejected the access token", **kw)
        if status == 429 or category in ("RATE_LIMITS", "RATE_LIMIT"):
            return RateLimitedError(
                "HubSpot is rate limiting requests", retry_after=self.retry_after(response), **kw
            )
        if status == 403:
            return AuthError("HubSpot denied access (missing scopes?)", **kw)
        if status == 404 or category == "OBJECT_NOT_FOUND":
            return NotFoundError("the HubSpot record does not exist", **kw)
        if status in _TRANSIENT_STATUSES:
            return TransientError("HubSpot is busy; try again", **kw)
        if status in (400, 409, 422) or category in ("VALIDATION_ERROR", "CONFLICT"):
            return AdapterValidationError(f"HubSpot rejected the request: {message[:200]}", **kw)
        return super().classify(response)

    def retry_after(self, response: httpx.Response) -> float | None:
        """Retry-After when sent; else from the 429's ``policyName``."""
        wait = super().retry_after(response)
        if wait is not None or response.status_code != 429:
            return wait
        policy = str(hs_error(response).get("policyName") or "").upper()
        if policy == "DAILY":
            return DAILY_RETRY_AFTER
        if policy == "TEN_SECONDLY_ROLLING":
            interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
            if interval.isdigit():
                return int(interval) / 1000
        return _POLICY_WAIT.get(policy)

    # -- records -----------------------------------------------------------------------

    def _record(self, spec: EntitySpec, row: dict[str, Any]) -> ExternalRecord:
        props = row.get("properties") or {}
        archived = bool(row.get("archived"))
        modified = (
            parse_hs_datetime(row.get("archivedAt"))
            if archived
            else parse_hs_datetime(props.get(spec.modified_property))
        ) or parse_hs_datetime(row.get("updatedAt"))
        return ExternalRecord(
            external_id=str(row["id"]), data=row, modified_at=modified, deleted=archived
        )

    def _stamp(self, spec: EntitySpec, row: dict[str, Any]) -> int:
        when = parse_hs_datetime((row.get("properties") or {}).get(spec.modified_property))
        when = when or parse_hs_datetime(row.get("updatedAt"))
        if when is None:
            raise AdapterValidationError(
                f"HubSpot returned a {spec.name} record without {spec.modified_property}"
            )
        return to_millis(when)

    # -- fetch -------------------------------------------------------------------------

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        spec = entity_spec(entity)
        filters = render_filters(options.filters)
        properties = requested_properties(spec, [property_name(f) for f in options.fields or []])
        if options.cursor:
            state = ScanState.decode(options.cursor)
        elif options.since is not None or filters:
            since = to_millis(options.since) if options.since is not None else None
            state = ScanState("search", lo=since)
        else:
            state = ScanState("list")

        if state.phase == "list":
            rows, next_state = await self._list_page(spec, options, properties, state, False)
        elif state.phase == "archived":
            rows, next_state = await self._list_page(spec, options, properties, state, True)
        elif state.phase == "search":
            rows, next_state = await self._search_page(spec, options, properties, filters, state)
        else:
            rows, next_state = await self._ties_page(spec, options, properties, filters, state)

        records = [self._record(spec, row) for row in rows]
        stamps = [r.modified_at for r in records if r.modified_at is not None and not r.deleted]
        if options.since is not None:
            stamps.append(options.since)
        return FetchResult(
            records=records,
            next_cursor=next_state.encode() if next_state else None,
            has_more=next_state is not None,
            high_water_mark=max(stamps, default=None),
        )

    def _after_main(self, options: FetchOptions) -> ScanState | None:
        return ScanState("archived") if options.include_deleted else None

    async def _list_page(
        self,
        spec: EntitySpec,
        options: FetchOptions,
        properties: list[str],
        state: ScanState,
        archived: bool,
    ) -> tuple[list[dict[str, Any]], ScanState | None]:
        paginator = CursorParamPaginator("after", "paging.next.after", start=state.after)
        params = {
            "limit": min(options.limit, MAX_LIST_LIMIT),
            "properties": ",".join(properties),
            "archived": "true" if archived else "false",
        }
        response, after = await self.fetch_page(f"{OBJECTS}/{spec.name}", paginator, params=params)
        rows = [r for r in response.json().get("results", []) if isinstance(r, dict)]
        if archived and options.since is not None:
            # The list API cannot filter: keep the tombstones archived since ``since``.
            rows = [
                r
                for r in rows
                if (parse_hs_datetime(r.get("archivedAt")) or options.since) >= options.since
            ]
        if after is not None:
            return rows, ScanState(state.phase, after=after)
        return rows, (self._after_main(options) if not archived else None)

    async def _search(
        self,
        spec: EntitySpec,
        properties: list[str],
        filters: list[dict[str, Any]],
        sort: str,
        limit: int,
    ) -> list[dict[str, Any]]:
        if self._search_limiter is not None:
            await self._search_limiter.acquire()
        body = {
            "filterGroups": [{"filters": filters}] if filters else [],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": properties,
            "limit": limit,
        }
        # Search is a read: safe to retry on 5xx although it is a POST.
        data = await self.request_json(
            "POST", f"{OBJECTS}/{spec.name}/search", json=body, retry=True
        )
        return [r for r in (data or {}).get("results", []) if isinstance(r, dict)]

    async def _search_page(
        self,
        spec: EntitySpec,
        options: FetchOptions,
        properties: list[str],
        filters: list[dict[str, Any]],
        state: ScanState,
    ) -> tuple[list[dict[str, Any]], ScanState | None]:
        limit = min(options.limit, MAX_SEARCH_LIMIT)
        mod = spec.modified_property
        bound = []
        if state.lo is not None:
            op = "GT" if state.open else "GTE"
            bound = [{"propertyName": mod, "operator": op, "value": str(state.lo)}]
        rows = await self._search(spec, properties, [*filters, *bound], mod, limit)
        skip = set(state.skip)
        edge, edge_ids = (state.lo, list(state.skip)) if state.skip else (None, [])
        fresh = []
        for row in rows:
            stamp, rid = self._stamp(spec, row), str(row["id"])
            if stamp == state.lo and rid in skip:
                continue
            fresh.append(row)
            if edge is None or stamp > edge:
                edge, edge_ids = stamp, [rid]
            elif stamp == edge and rid not in edge_ids:
                edge_ids.append(rid)
        if len(rows) < limit:
            return fresh, self._after_main(options)
        if (edge == state.lo and not state.open) or edge is None:
            # A whole page at one instant: read that instant in id order.
            tie = state.lo if edge is None else edge
            return fresh, ScanState("ties", tie=tie, skip=edge_ids)
        return fresh, ScanState("search", lo=edge, skip=edge_ids)

    async def _ties_page(
        self,
        spec: EntitySpec,
        options: FetchOptions,
        properties: list[str],
        filters: list[dict[str, Any]],
        state: ScanState,
    ) -> tuple[list[dict[str, Any]], ScanState | None]:
        limit = min(options.limit, MAX_SEARCH_LIMIT)
        scan = [{"propertyName": spec.modified_property, "operator": "EQ", "value": str(state.tie)}]
        if state.last_id is not None:
            scan.append({"propertyName": ID_PROPERTY, "operator": "GT", "value": state.last_id})
        rows = await self._search(spec, properties, [*filters, *scan], ID_PROPERTY, limit)
        skip = set(state.skip)
        fresh = [r for r in rows if str(r["id"]) not in skip]
        if len(rows) < limit:
            return fresh, ScanState("search", lo=state.tie, open=True)
        last = str(rows[-1]["id"])
        return fresh, ScanState("ties", tie=state.tie, last_id=last, skip=state.skip)

    async def fetch_record(self, entity: str, record_id: str) -> ExternalRecord | None:
        spec = entity_spec(entity)
        params = {"properties": ",".join(requested_properties(spec))}
        try:
            row = await self.request_json("GET", self._object_path(spec, record_id), params=params)
        except NotFoundError:
            return None
        return self._record(spec, row)

    # -- write -------------------------------------------------------------------------

    @staticmethod
    def _object_path(spec: EntitySpec, record_id: str) -> str:
        if not record_id.isdigit():
            raise NotFoundError(
                "the HubSpot record does not exist", detail=f"{record_id[:40]!r} is not an id"
            )
        return f"{OBJECTS}/{spec.name}/{record_id}"

    def _writable(self, spec: EntitySpec) -> None:
        if not spec.bidirectional:
            raise NotSupportedError(f"HubSpot {spec.name} are synced inbound only")

    async def create_record(self, entity: str, data: dict[str, Any]) -> str:
        spec = entity_spec(entity)
        self._writable(spec)
        body = await self.request_json(
            "POST", f"{OBJECTS}/{spec.name}", json={"properties": _properties_of(data)}
        )
        return str(body["id"])

    async def update_record(self, entity: str, record_id: str, data: dict[str, Any]) -> None:
        spec = entity_spec(entity)
        self._writable(spec)
        await self.request(
            "PATCH", self._object_path(spec, record_id), json={"properties": _properties_of(data)}
        )

    async def delete_record(self, entity: str, record_id: str) -> None:
        spec = entity_spec(entity)
        self._writable(spec)
        await self.request("DELETE", self._object_path(spec, record_id))

    # -- batches (100 inputs per call) ------------------------------------------------

    async def batch_read(self, entity: str, record_ids: list[str]) -> list[ExternalRecord]:
        """The records that exist among ``record_ids`` (missing ones are left out)."""
        spec = entity_spec(entity)
        found: list[ExternalRecord] = []
        for chunk in _chunks(list(dict.fromkeys(record_ids))):
            body = {
                "properties": requested_properties(spec),
                "inputs": [{"id": rid} for rid in chunk],
            }
            data = await self.request_json(
                "POST", f"{OBJECTS}/{spec.name}/batch/read", json=body, retry=True
            )
            found += [self._record(spec, row) for row in (data or {}).get("results", [])]
        return found

    async def batch_create(self, entity: str, rows: list[dict[str, Any]]) -> list[str]:
        """Create ``rows``; returns the new ids in input order."""
        spec = entity_spec(entity)
        self._writable(spec)
        ids: list[str] = []
        for chunk in _chunks(rows):
            inputs = [{"properties": _properties_of(row)} for row in chunk]
            data = await self.request_json(
                "POST", f"{OBJECTS}/{spec.name}/batch/create", json={"inputs": inputs}
            )
            results = (data or {}).get("results", [])
            if len(results) != len(chunk):
                raise AdapterValidationError(
                    "HubSpot created only part of a batch", detail=str(data)[:300]
                )
            ids += [str(r["id"]) for r in results]
        return ids

    async def batch_update(self, entity: str, changes: dict[str, dict[str, Any]]) -> None:
        """Update several records (id -> properties); raises when any failed."""
        spec = entity_spec(entity)
        self._writable(spec)
        items = list(changes.items())
        for chunk in _chunks(items):
            inputs = [
                {
                    "id": self._object_path(spec, rid).rsplit("/", 1)[1],
                    "properties": _properties_of(p),
                }
                for rid, p in chunk
            ]
            response = await self.request(
                "POST", f"{OBJECTS}/{spec.name}/batch/update", json={"inputs": inputs}
            )
            if response.status_code == 207:
                errors = response.json().get("errors", [])
                category = str(errors[0].get("category", "")) if errors else ""
                cls = NotFoundError if category == "OBJECT_NOT_FOUND" else AdapterValidationError
                raise cls("HubSpot rejected part of a batch update", detail=str(errors)[:300])

    # -- webhooks ------------------------------------------------------------------------

    async def register_webhook(self, events: list[str], callback_url: str) -> WebhookRegistration:
        raise NotSupportedError(
            "HubSpot webhook subscriptions belong to the app: set them in the app's settings"
        )

    def validate_webhook_signature(self, request: WebhookRequest, secret: str) -> bool:
        """``secret`` is the app's client secret."""
        return wh.verify(request, secret, self.clock.now())

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        return wh.parse(request.body)
