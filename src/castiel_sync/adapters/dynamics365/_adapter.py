"""The Dynamics 365 / Dataverse adapter: Web API (OData v4) with change tracking.

Wire facts (Dataverse developer docs, ``powerapps-docs/developer/data-platform/...``):

- Auth: Microsoft identity platform v2.0, auth code flow at
  ``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize|token`` with the
  per-environment scope ``https://{org}.crm.dynamics.com/.default`` plus ``offline_access``;
  each refresh returns a new refresh token (store it) (authenticate-oauth.md; Entra
  refresh-tokens). The org URL is ``Credentials.instance_url``; the Web API is under
  ``/api/data/v9.2/`` (compose-http-requests-handle-errors.md).
- Queries ``GET /api/data/v9.2/{entityset}?$select=&$filter=&$orderby=`` with
  ``Prefer: odata.maxpagesize=N`` (at most 5,000; echoed in ``Preference-Applied``); more
  rows come through ``@odata.nextLink`` (a ``$skiptoken`` paging cookie) which must be
  used unchanged, with the same maxpagesize (webapi/query/page-results.md).
- Change tracking: ``Prefer: odata.track-changes`` returns the rows and, on the last page,
  ``@odata.deltaLink`` (``$deltatoken=``); calling it returns changed rows and removed
  ones as ``{"@odata.context": ".../$metadata#accounts/$deletedEntity", "id": ...,
  "reason": "deleted"}``. ``$filter``, ``$orderby``, ``$expand``, ``$top`` are refused
  with tracking, so pull filters use the ``modifiedon`` path
  (use-change-tracking-synchronize-data-external-systems.md). A table without change
  tracking answers ``ChangeTrackingNotEnabledForEntity`` ``0x80072491``
  (reference/web-service-error-codes.md): the adapter then reads without tracking and
  the host's next run uses ``modifiedon ge since``.
- Create ``POST`` -> ``204`` with ``OData-EntityId: [org]/api/data/v9.2/accounts(<guid>)``
  (or ``201`` with the row under ``Prefer: return=representation``) (create-entity-web-api.md);
  update ``PATCH {set}(<id>)`` with ``If-Match: *`` so it never upsert-creates, or an
  ``@odata.etag`` for optimistic concurrency (``412 Precondition Failed`` on mismatch);
  delete ``DELETE`` -> ``204`` (perform-conditional-operations-using-web-api.md).
- Errors ``{"error": {"code": "0x...", "message": ...}}``: 401 expired token, 403
  privileges, 404 ``0x80040217`` (does not exist), 412 concurrency/duplicate
  (``0x80040237`` DuplicateRecord); service protection: ``429`` with ``Retry-After``
  seconds and ``0x80072322`` / ``0x80072321`` / ``0x80072326`` (requests, execution time,
  concurrency; SDK codes -2147015902 / -2147015903 / -2147015898); headers
  ``x-ms-ratelimit-burst-remaining-xrm-requests`` and
  ``x-ms-ratelimit-time-remaining-xrm-requests`` (api-limits.md).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import httpx

from castiel_sync.adapters.dynamics365 import _odata
from castiel_sync.adapters.dynamics365 import _webhooks as wh
from castiel_sync.adapters.dynamics365._entities import (
    CUSTOM_COLUMN,
    ENTITIES,
    EntitySpec,
    entity_spec,
)
from castiel_sync.sdk import (
    AdapterError,
    AdapterValidationError,
    AuthError,
    ExternalRecord,
    FetchOptions,
    FetchResult,
    HttpAdapter,
    NextUrlPaginator,
    NotFoundError,
    NotSupportedError,
    PermanentError,
    RateLimit,
    RateLimitedError,
    RetryPolicy,
    TransientError,
    WebhookEvent,
    WebhookRequest,
    WebhookResponse,
    parse_timestamp,
)

API_PATH = "/api/data/v9.2"
AUTHORIZE_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"
TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"  # noqa: S105 - a URL
MAX_PAGE_SIZE = 5000

# Web API hex codes (web-service-error-codes.md; api-limits.md).
OBJECT_DOES_NOT_EXIST = "0x80040217"
DUPLICATE_RECORD = "0x80040237"
PRIVILEGE_DENIED = "0x80040220"
CONCURRENCY_VERSION_MISMATCH = "0x80060882"
CHANGE_TRACKING_NOT_ENABLED = "0x80072491"
SERVICE_PROTECTION = {
    "0x80072322": "number of requests",  # -2147015902
    "0x80072321": "combined execution time",  # -2147015903
    "0x80072326": "concurrent requests",  # -2147015898
}
_SERVICE_PROTECTION_DECIMAL = {"-2147015902", "-2147015903", "-2147015898"}

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TRACKED, _DELTA, _PLAIN = "t", "d", "p"


class ConcurrencyConflictError(AdapterValidationError):
    """``412``: the row changed since its ``@odata.etag`` was read; fetch and merge again."""


class ChangeTrackingNotEnabledError(AdapterValidationError):
    """The table is not enabled for change tracking (``0x80072491``)."""


def scope_for(org_url: str) -> str:
    """The OAuth scopes for one environment: its ``/.default`` resource scope and a
    refresh token (``offline_access``)."""
    origin = httpx.URL(org_url.rstrip("/"))
    return f"{origin.scheme}://{origin.host}/.default offline_access"


def dataverse_error(response: httpx.Response) -> tuple[str, str]:
    """``(code, message)`` of a Web API error body; empty strings when absent."""
    body = HttpAdapter.json_body(response)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or "").lower(), str(error.get("message") or "")


def entity_id_from_header(value: str | None, spec: EntitySpec) -> str:
    """The GUID in ``OData-EntityId: https://org/api/data/v9.2/accounts(<guid>)``."""
    match = re.search(rf"/{re.escape(spec.entity_set)}\(({_GUID.pattern})\)$", value or "")
    if match is None:
        raise PermanentError(
            "Dataverse did not say which record it created",
            detail=f"OData-EntityId header: {str(value)[:200]!r}",
        )
    return match.group(1).lower()


class _NextLinkPaginator(NextUrlPaginator):
    """``@odata.nextLink`` is one top-level key, not a dotted path."""

    def get_next(self, response: httpx.Response) -> str | None:
        value = response.json().get("@odata.nextLink")
        return str(value) if value else None


class Dynamics365Adapter(HttpAdapter):
    """Dataverse tables account, contact, opportunity (both directions)."""

    provider_id: ClassVar[str] = "dynamics365"
    entities: ClassVar[dict[str, EntitySpec]] = ENTITIES
    test_connection_path: ClassVar[str] = f"{API_PATH}/WhoAmI"
    find_by_fetch: ClassVar[bool] = True  # eq filters are rendered into the query
    # The service protection window: 6,000 requests per user per 300 s (api-limits.md).
    default_rate_limit: ClassVar[RateLimit | None] = RateLimit(requests_per_second=20.0, burst=200)
    # Retry-After values grow while a client keeps pushing (api-limits.md): sleep through
    # up to five minutes (the evaluation window) in-process, longer goes to the queue.
    retry_policy: ClassVar[RetryPolicy] = RetryPolicy(max_retry_after=300.0)
    default_headers: ClassVar[dict[str, str]] = {
        "Accept": "application/json",
        "OData-MaxVersion": "4.0",
        "OData-Version": "4.0",
        "If-None-Match": "null",
    }

    def __init__(self) -> None:
        super().__init__()
        # Tables found without change tracking on this connection.
        self.untracked: set[str] = set()

    # -- wiring ------------------------------------------------------------------------

    def base_url_for(self, credentials: Any) -> str:
        base = super().base_url_for(credentials).rstrip("/")
        # Accept the Web API endpoint too ("https://org.crm.dynamics.com/api/data/v9.2").
        return re.sub(r"/api/data/v\d+\.\d+$", "", base)

    @property
    def org_url(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def spec(self, entity: str) -> EntitySpec:
        try:
            return entity_spec(entity)
        except KeyError:
            raise NotSupportedError(f"Dataverse has no synced table {entity!r}") from None

    # -- classification ----------------------------------------------------------------

    def track_rate_limit(self, response: httpx.Response) -> None:
        burst = response.headers.get("x-ms-ratelimit-burst-remaining-xrm-requests")
        time_left = response.headers.get("x-ms-ratelimit-time-remaining-xrm-requests")
        if burst is not None:
            try:
                self.rate_limit_state["burst_remaining"] = int(burst.replace(",", ""))
                self.rate_limit_state["remaining"] = self.rate_limit_state["burst_remaining"]
            except ValueError:
                pass
        if time_left is not None:
            try:
                self.rate_limit_state["time_remaining"] = float(time_left.replace(",", ""))
            except ValueError:
                pass

    def classify(self, response: httpx.Response) -> AdapterError | None:
        status = response.status_code
        if status < 400:
            return None
        code, message = dataverse_error(response)
        detail = self.redact(f"{code or status}: {message}"[:500]) if message else None
        detail = detail or self.error_detail(response)
        kw: dict[str, Any] = {"detail": detail, "status_code": status}
        if status == 401:
            return AuthError("Dataverse rejected the access token", **kw)
        if status == 429 or code in SERVICE_PROTECTION or code in _SERVICE_PROTECTION_DECIMAL:
            which = SERVICE_PROTECTION.get(code, "requests")
            return RateLimitedError(
                f"Dataverse service protection limit reached ({which})",
                retry_after=self.retry_after(response),
                **kw,
            )
        if code == CHANGE_TRACKING_NOT_ENABLED:
            return ChangeTrackingNotEnabledError(
                "change tracking is not enabled for this Dataverse table", **kw
            )
        if status == 403 or code == PRIVILEGE_DENIED:
            return AuthError("the Dataverse user lacks the privilege for this operation", **kw)
        if status == 404 or code == OBJECT_DOES_NOT_EXIST:
            return NotFoundError("the Dataverse record does not exist", **kw)
        if status == 412:
            if code == DUPLICATE_RECORD or "already exists" in message:
                return AdapterValidationError("a matching Dataverse record already exists", **kw)
            return ConcurrencyConflictError("the Dataverse record changed since it was read", **kw)
        if code == DUPLICATE_RECORD:
            return AdapterValidationError("a matching Dataverse record already exists", **kw)
        if status in (400, 405, 409, 413, 422):
            return AdapterValidationError("Dataverse rejected the request", **kw)
        if status >= 500 or status == 408:
            return TransientError(
                "Dataverse is temporarily unavailable", retry_after=self.retry_after(response), **kw
            )
        return PermanentError("Dataverse refused the request", **kw)

    # -- reads -------------------------------------------------------------------------

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        """One page of ``entity``.

        - ``cursor``: the next page of whatever query issued it (``@odata.nextLink``);
        - ``delta_token`` (a stored ``@odata.deltaLink``): the changes since, removals as
          tombstones (``include_deleted``); falls back to ``modifiedon ge since`` when the
          table has lost change tracking;
        - ``since`` or pull filters: ``modifiedon ge since`` and the filters, ordered by
          ``modifiedon`` (change tracking cannot take ``$filter``);
        - neither: an initial change-tracked full read whose last page carries the delta
          token; a table without change tracking is read plainly.
        """
        spec = self.spec(entity)
        page_size = min(options.limit, MAX_PAGE_SIZE)
        select = self._select(spec, options.fields)
        if options.cursor:
            mode, _, link = options.cursor.partition(":")
            if mode not in (_TRACKED, _DELTA, _PLAIN):
                raise _odata.invalid("the page cursor is not one this adapter issued")
            self._check_link(spec, link)
            return await self._page(spec, mode, link, None, page_size, options)
        if options.delta_token and not options.filters:
            self._check_link(spec, options.delta_token)
            try:
                return await self._page(spec, _DELTA, options.delta_token, None, page_size, options)
            except ChangeTrackingNotEnabledError:
                self.untracked.add(spec.name)
                return await self._plain(spec, select, page_size, options)
        if options.since is not None or options.filters or spec.name in self.untracked:
            return await self._plain(spec, select, page_size, options)
        try:
            return await self._page(
                spec, _TRACKED, self._url(spec), {"$select": ",".join(select)}, page_size, options
            )
        except ChangeTrackingNotEnabledError:
            self.untracked.add(spec.name)
            return await self._plain(spec, select, page_size, options)

    async def _plain(
        self, spec: EntitySpec, select: list[str], page_size: int, options: FetchOptions
    ) -> FetchResult:
        params = {
            "$select": ",".join(select),
            "$orderby": f"modifiedon asc,{spec.primary_id} asc",
        }
        expression = _odata.build_filter(spec, options.filters, since=options.since)
        if expression:
            params["$filter"] = expression
        return await self._page(spec, _PLAIN, self._url(spec), params, page_size, options)

    async def _page(
        self,
        spec: EntitySpec,
        mode: str,
        url: str,
        params: dict[str, str] | None,
        page_size: int,
        options: FetchOptions,
    ) -> FetchResult:
        prefer = [f"odata.maxpagesize={page_size}"]
        if mode == _TRACKED:
            prefer.append("odata.track-changes")
        # A nextLink or deltaLink is used as given: no query options added (page-results.md).
        paginator = _NextLinkPaginator("@odata.nextLink", start=None if params else url)
        response, next_link = await self.fetch_page(
            url, paginator, params=params, headers={"Prefer": ",".join(prefer)}
        )
        body = response.json()
        rows = [row for row in body.get("value") or [] if isinstance(row, dict)]
        records = [self._record(spec, row) for row in rows]
        if not options.include_deleted:
            records = [r for r in records if not r.deleted]
        delta_link = body.get("@odata.deltaLink")
        if next_link:
            self._check_link(spec, next_link)
        stamps = [r.modified_at for r in records if r.modified_at is not None]
        return FetchResult(
            records=records,
            next_cursor=f"{mode}:{next_link}" if next_link else None,
            has_more=bool(next_link),
            high_water_mark=max(stamps, default=options.since),
            delta_token=str(delta_link) if delta_link and not next_link else None,
        )

    async def fetch_record(self, entity: str, record_id: str) -> ExternalRecord | None:
        spec = self.spec(entity)
        if not _GUID.fullmatch(record_id or ""):
            return None
        try:
            body = await self.request_json(
                "GET",
                f"{self._url(spec)}({record_id})",
                params={"$select": ",".join(spec.select())},
            )
        except NotFoundError:
            return None
        return self._record(spec, body)

    # -- writes ------------------------------------------------------------------------

    async def create_record(self, entity: str, data: dict[str, Any]) -> str:
        spec = self._writable(entity)
        response = await self.request("POST", self._url(spec), json=self._payload(spec, data))
        if response.status_code == 201 and response.content:
            body = response.json()
            if isinstance(body, dict) and body.get(spec.primary_id):
                return str(body[spec.primary_id]).lower()
        return entity_id_from_header(response.headers.get("OData-EntityId"), spec)

    async def update_record(self, entity: str, record_id: str, data: dict[str, Any]) -> None:
        """``PATCH`` with ``If-Match: *`` (never creates); a ``@odata.etag`` in ``data``
        makes it conditional on that version (412 -> :class:`ConcurrencyConflictError`)."""
        spec = self._writable(entity)
        self._check_id(record_id)
        changes = dict(data)
        etag = changes.pop("@odata.etag", None)
        if_match = str(etag) if etag else "*"
        await self.request(
            "PATCH",
            f"{self._url(spec)}({record_id})",
            json=self._payload(spec, changes),
            headers={"If-Match": if_match},
            # Setting the same values again is harmless; a conditional PATCH is not retried.
            retry=if_match == "*",
        )

    async def delete_record(self, entity: str, record_id: str) -> None:
        spec = self._writable(entity)
        self._check_id(record_id)
        await self.request("DELETE", f"{self._url(spec)}({record_id})")

    # -- webhooks ----------------------------------------------------------------------

    def validate_webhook_signature(self, request: WebhookRequest, secret: str) -> bool:
        """Dataverse authenticates a webhook with the registered key (``?code=``), headers
        or query parameters; there is no signature over the body."""
        if not secret:
            return False
        return wh.WebhookAuth.parse(secret).matches(request)

    def handle_webhook_handshake(
        self, request: WebhookRequest, secret: str
    ) -> WebhookResponse | None:
        return None  # Dataverse has no subscription handshake.

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        return wh.events(request.body)

    # -- helpers -----------------------------------------------------------------------

    def _url(self, spec: EntitySpec) -> str:
        return f"{API_PATH}/{spec.entity_set}"

    def _check_link(self, spec: EntitySpec, link: str) -> None:
        """A nextLink/deltaLink must point at this org's same entity set, so a stored
        cursor can never send the token elsewhere."""
        prefix = f"{self.org_url}{API_PATH}/{spec.entity_set}?"
        if not link.startswith(prefix):
            raise _odata.invalid("the page or delta link does not belong to this table")

    def _writable(self, entity: str) -> EntitySpec:
        spec = self.spec(entity)
        if not spec.writable:
            raise NotSupportedError(f"Dataverse {spec.name} rows are synced inbound only")
        return spec

    @staticmethod
    def _check_id(record_id: str) -> None:
        if not isinstance(record_id, str) or not _GUID.fullmatch(record_id):
            raise NotFoundError(
                "the Dataverse record does not exist",
                detail="not a GUID",
                status_code=404,
            )

    @staticmethod
    def _select(spec: EntitySpec, fields: list[str] | None) -> list[str]:
        if not fields:
            return spec.select()
        chosen = [spec.primary_id, "modifiedon"]
        for name in fields:
            if spec.column_type(name) is None and not CUSTOM_COLUMN.fullmatch(name):
                raise _odata.invalid(f"{name!r} is not a {spec.name} column")
            if name not in chosen:
                chosen.append(name)
        return chosen

    @staticmethod
    def _payload(spec: EntitySpec, data: dict[str, Any]) -> dict[str, Any]:
        writable = spec.writable_columns()
        payload: dict[str, Any] = {}
        for name, value in data.items():
            if name in writable or (
                spec.column_type(name) is None and CUSTOM_COLUMN.fullmatch(name)
            ):
                payload[name] = value
            else:
                raise _odata.invalid(f"{name!r} cannot be written on a Dataverse {spec.name}")
        return payload

    @staticmethod
    def _record(spec: EntitySpec, row: dict[str, Any]) -> ExternalRecord:
        context = str(row.get("@odata.context") or "")
        if context.endswith("/$deletedEntity") or (
            "reason" in row and "id" in row and len(row) <= 3
        ):
            return ExternalRecord(
                external_id=str(row.get("id")).lower(),
                data={"reason": row.get("reason")},
                deleted=True,
            )
        data = {k: v for k, v in row.items() if not k.startswith("@odata.") or k == "@odata.etag"}
        record_id = row.get(spec.primary_id)
        if not record_id:
            raise PermanentError(f"a Dataverse {spec.name} row lacks {spec.primary_id}")
        return ExternalRecord(
            external_id=str(record_id).lower(),
            data=data,
            modified_at=parse_timestamp(row.get("modifiedon")),
        )
