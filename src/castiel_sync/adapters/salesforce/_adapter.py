"""The Salesforce adapter: REST API (SOQL query/queryAll, sObject rows, getDeleted) and
inbound Outbound Messages / relayed Change Data Capture events.

Wire facts (Salesforce REST API Developer Guide unless noted):

- Base URL is the token response's ``instance_url``; every resource is under
  ``/services/data/vXX.X/`` (version configurable, default :data:`DEFAULT_API_VERSION`).
- ``GET query/?q=`` returns ``totalSize``, ``done``, ``records`` (each with ``attributes``
  ``{type, url}``) and, while ``done`` is false, ``nextRecordsUrl`` such as
  ``/services/data/v62.0/query/01gRO0000016PIAYA2-2000``; that URL is requested as is
  (resources_query.htm). ``queryAll`` also returns deleted (``IsDeleted``) and archived
  rows; its ``nextRecordsUrl`` still says ``query`` (dome_queryall.htm).
- ``Sforce-Query-Options: batchSize=N``: default 2,000, minimum 200, maximum 2,000, and a
  batch may be smaller than asked (headers_queryoptions.htm).
- ``sobjects/{type}/deleted/?start=&end=`` returns ``deletedRecords [{id, deletedDate}]``,
  ``earliestDateAvailable`` and ``latestDateCovered`` (resources_getdeleted.htm).
- ``POST sobjects/{type}/`` -> 201 ``{"id", "errors": [], "success": true}``
  (dome_sobject_create.htm); ``PATCH`` and ``DELETE sobjects/{type}/{id}`` -> 204.
- Errors are arrays ``[{"message", "errorCode", "fields"?}]``; 401 is an expired or
  invalid session (``INVALID_SESSION_ID``), 403 with ``REQUEST_LIMIT_EXCEEDED`` is the
  org's API limit, 404 a missing or deleted resource (errorcodes.htm).
- Every response carries ``Sforce-Limit-Info: api-usage=used/limit``
  (headers_api_usage.htm).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from castiel_sync.adapters.salesforce import _webhooks as wh
from castiel_sync.adapters.salesforce._entities import ENTITIES, EntitySpec, entity_spec
from castiel_sync.adapters.salesforce._soql import build_select, invalid
from castiel_sync.sdk import (
    AdapterError,
    AdapterValidationError,
    AuthError,
    ConnectionTestResult,
    Credentials,
    ExternalRecord,
    FetchOptions,
    FetchResult,
    HttpAdapter,
    NextUrlPaginator,
    NotFoundError,
    NotSupportedError,
    PermanentError,
    RateLimitedError,
    TransientError,
    WebhookEvent,
    WebhookRequest,
    WebhookResponse,
    parse_timestamp,
)

DEFAULT_API_VERSION = "v62.0"
# OAuth 2.0 web server flow endpoints (production and sandbox logins).
AUTHORIZE_URL = "https://login.salesforce.com/services/oauth2/authorize"
TOKEN_URL = "https://login.salesforce.com/services/oauth2/token"  # noqa: S105 - a URL
SANDBOX_AUTHORIZE_URL = "https://test.salesforce.com/services/oauth2/authorize"
SANDBOX_TOKEN_URL = "https://test.salesforce.com/services/oauth2/token"  # noqa: S105

MIN_BATCH_SIZE = 200
MAX_BATCH_SIZE = 2000
# A daily API limit ("TotalRequests Limit exceeded") is a rolling 24-hour window, with no
# Retry-After: wait an hour before asking again rather than retrying within the job.
DAILY_LIMIT_RETRY_AFTER = 3600.0

_VERSION = re.compile(r"v\d{2,3}\.\d")
_RECORD_ID = re.compile(r"[A-Za-z0-9]{15}([A-Za-z0-9]{3})?")
_NEXT_URL = re.compile(r"/services/data/v\d{2,3}\.\d/query/[A-Za-z0-9]{15,18}-\d+")
_CUSTOM_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,39}__c")
_KEYSET_PREFIX = "after|"
_LIMIT_INFO = re.compile(r"([a-z-]+)=(\d+)/(\d+)")

_VALIDATION_CODES = frozenset(
    {
        "MALFORMED_QUERY",
        "MALFORMED_ID",
        "INVALID_FIELD",
        "INVALID_TYPE",
        "INVALID_QUERY_FILTER_OPERATOR",
        "INVALID_QUERY_LOCATOR",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "REQUIRED_FIELD_MISSING",
        "STRING_TOO_LONG",
        "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "FIELD_INTEGRITY_EXCEPTION",
        "DUPLICATE_VALUE",
        "JSON_PARSER_ERROR",
        "INVALID_REPLICATION_DATE",
        "EXCEEDED_ID_LIMIT",
    }
)
# Contention and platform hiccups that succeed when tried again.
_TRANSIENT_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "QUERY_TIMEOUT"})


# ``2013-05-20T20:49:32.000+0000`` (REST) or ISO 8601 with ``Z``/``+00:00``. The name stays
# for importers of this package.
parse_sf_datetime = parse_timestamp


def sf_errors(response: httpx.Response) -> list[dict[str, Any]]:
    """The error objects of a Salesforce error body (an array, sometimes one object)."""
    body = HttpAdapter.json_body(response)
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        return []
    return [item for item in body if isinstance(item, dict)]


class SalesforceAdapter(HttpAdapter):
    """Salesforce CRM: Account, Contact, Opportunity (both ways); Task, Event (inbound)."""

    provider_id: ClassVar[str] = "salesforce"
    entities: ClassVar[dict[str, EntitySpec]] = ENTITIES
    default_headers: ClassVar[dict[str, str]] = {"Accept": "application/json"}
    find_by_fetch: ClassVar[bool] = True  # eq filters are rendered into the query

    def __init__(self, api_version: str = DEFAULT_API_VERSION) -> None:
        super().__init__()
        self.api_version = api_version

    # -- wiring ------------------------------------------------------------------------

    async def connect(self, credentials: Credentials) -> None:
        # A host may pin the REST version per integration (Credentials allows extras).
        version = getattr(credentials, "api_version", None) or self.api_version
        if not _VERSION.fullmatch(str(version)):
            raise PermanentError(f"{version!r} is not a Salesforce REST API version")
        self.api_version = str(version)
        if not credentials.instance_url:
            raise PermanentError(
                "Salesforce needs the instance_url from the token response",
                detail="Credentials.instance_url is empty",
            )
        await super().connect(credentials)

    @property
    def api_root(self) -> str:
        return f"/services/data/{self.api_version}"

    # -- classification ----------------------------------------------------------------

    def track_rate_limit(self, response: httpx.Response) -> None:
        """``Sforce-Limit-Info: api-usage=18/5000; per-app-api-usage=17/250(appName=x)``."""
        info = response.headers.get("Sforce-Limit-Info")
        if not info:
            return
        for name, used, limit in _LIMIT_INFO.findall(info):
            key = name.replace("-", "_")
            self.rate_limit_state[key] = {"used": int(used), "limit": int(limit)}
            if name == "api-usage":
                self.rate_limit_state["limit"] = int(limit)
                self.rate_limit_state["remaining"] = max(0, int(limit) - int(used))

    def classify(self, response: httpx.Response) -> AdapterError | None:
        status = response.status_code
        if status < 400:
            return None
        errors = sf_errors(response)
        code = str(errors[0].get("errorCode") or "") if errors else ""
        message = str(errors[0].get("message") or "") if errors else ""
        detail = self.redact(f"{code}: {message}"[:500]) if code else self.error_detail(response)
        kw: dict[str, Any] = {"detail": detail, "status_code": status}
        if status == 401 or code == "INVALID_SESSION_ID":
            return AuthError("Salesforce session expired or invalid", **kw)
        if code == "REQUEST_LIMIT_EXCEEDED" or status == 429:
            wait = self.retry_after(response)
            if wait is None and "TotalRequests" in message:
                wait = DAILY_LIMIT_RETRY_AFTER
            return RateLimitedError("Salesforce API request limit exceeded", retry_after=wait, **kw)
        if code in ("NOT_FOUND", "ENTITY_IS_DELETED") or status in (404, 410):
            return NotFoundError("the Salesforce record or resource does not exist", **kw)
        if code in _TRANSIENT_CODES:
            return TransientError("Salesforce is busy; try again", **kw)
        if code in _VALIDATION_CODES or status in (400, 409, 422):
            fields = errors[0].get("fields") if errors else None
            where = (
                f" ({', '.join(map(str, fields))})" if isinstance(fields, list) and fields else ""
            )
            return AdapterValidationError(f"Salesforce rejected the request{where}", **kw)
        return super().classify(response)

    # -- connection --------------------------------------------------------------------

    async def test_connection(self) -> ConnectionTestResult:
        try:
            limits = await self.request_json("GET", f"{self.api_root}/limits/")
        except AdapterError as exc:
            return ConnectionTestResult(
                ok=False,
                message=exc.user_message,
                details={"error": type(exc).__name__, "status_code": exc.status_code},
            )
        daily = (limits or {}).get("DailyApiRequests") or {}
        return ConnectionTestResult(
            ok=True,
            message="connected to Salesforce",
            details={
                "api_version": self.api_version,
                "daily_api_requests": {
                    "max": daily.get("Max"),
                    "remaining": daily.get("Remaining"),
                },
            },
        )

    # -- reads -------------------------------------------------------------------------

    def spec(self, entity: str) -> EntitySpec:
        try:
            return entity_spec(entity)
        except KeyError:
            raise NotSupportedError(f"Salesforce has no synced entity {entity!r}") from None

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        """One page of ``entity`` in ``SystemModstamp, Id`` order.

        A page is Salesforce's batch (``nextRecordsUrl`` becomes ``next_cursor``). When a
        batch holds more than ``options.limit`` records (Salesforce's minimum batch is
        200), the page ends at the limit and the cursor continues strictly after the last
        record returned: ``(SystemModstamp, Id)`` keyset, so equal stamps are neither
        skipped nor repeated. A keyset cursor is re-run with the same options.
        """
        spec = self.spec(entity)
        batch = min(MAX_BATCH_SIZE, max(MIN_BATCH_SIZE, options.limit))
        headers = {"Sforce-Query-Options": f"batchSize={batch}"}
        cursor = options.cursor
        if cursor and cursor.startswith("/services/"):
            if not _NEXT_URL.fullmatch(cursor):
                raise invalid("the page cursor is not a Salesforce nextRecordsUrl")
            paginator = NextUrlPaginator("nextRecordsUrl", start=cursor)
            response, next_url = await self.fetch_page(cursor, paginator, headers=headers)
        else:
            after = self._decode_keyset(cursor) if cursor else None
            soql = build_select(
                spec,
                fields=self._fields(spec, options.fields),
                filters=options.filters,
                since=options.since,
                after=after,
                include_deleted=options.include_deleted,
            )
            resource = "queryAll" if options.include_deleted else "query"
            paginator = NextUrlPaginator("nextRecordsUrl")
            response, next_url = await self.fetch_page(
                f"{self.api_root}/{resource}/", paginator, params={"q": soql}, headers=headers
            )
        body = response.json()
        raw = [r for r in body.get("records") or [] if isinstance(r, dict)]
        if body.get("done", True):
            next_url = None
        if len(raw) > options.limit:
            raw = raw[: options.limit]
            last = raw[-1]
            next_cursor: str | None = self._encode_keyset(last)
        else:
            next_cursor = next_url
        records = [self._record(r) for r in raw]
        stamps = [r.modified_at for r in records if r.modified_at is not None]
        return FetchResult(
            records=records,
            next_cursor=next_cursor,
            has_more=next_cursor is not None,
            high_water_mark=max(stamps) if stamps else options.since,
        )

    async def fetch_record(self, entity: str, record_id: str) -> ExternalRecord | None:
        spec = self.spec(entity)
        self._check_id(record_id)
        fields = ",".join(self._fields(spec, None))
        try:
            body = await self.request_json(
                "GET",
                f"{self.api_root}/sobjects/{spec.sobject}/{record_id}",
                params={"fields": fields},
            )
        except NotFoundError:
            return None
        return self._record(body)

    async def fetch_deleted(self, entity: str, start: datetime, end: datetime) -> FetchResult:
        """Records deleted in ``[start, end]`` (sObject Get Deleted). ``high_water_mark`` is
        ``latestDateCovered``: start the next window there, as the docs advise."""
        spec = self.spec(entity)
        body = await self.request_json(
            "GET",
            f"{self.api_root}/sobjects/{spec.sobject}/deleted/",
            params={"start": _iso(start), "end": _iso(end)},
        )
        records = [
            ExternalRecord(
                external_id=str(item["id"]),
                modified_at=parse_sf_datetime(item.get("deletedDate")),
                deleted=True,
            )
            for item in (body or {}).get("deletedRecords") or []
            if isinstance(item, dict) and item.get("id")
        ]
        covered = parse_sf_datetime((body or {}).get("latestDateCovered"))
        return FetchResult(records=records, high_water_mark=covered or end)

    # -- writes ------------------------------------------------------------------------

    async def create_record(self, entity: str, data: dict[str, Any]) -> str:
        spec = self._writable_spec(entity)
        body = await self.request_json(
            "POST", f"{self.api_root}/sobjects/{spec.sobject}/", json=self._payload(spec, data)
        )
        if not isinstance(body, dict) or not body.get("success") or not body.get("id"):
            raise PermanentError(
                "Salesforce did not confirm the new record", detail=str(body)[:300]
            )
        return str(body["id"])

    async def update_record(self, entity: str, record_id: str, data: dict[str, Any]) -> None:
        spec = self._writable_spec(entity)
        self._check_id(record_id)
        # PATCH sets fields to given values: repeating it is harmless, so retry it.
        await self.request(
            "PATCH",
            f"{self.api_root}/sobjects/{spec.sobject}/{record_id}",
            json=self._payload(spec, data),
            retry=True,
        )

    async def delete_record(self, entity: str, record_id: str) -> None:
        spec = self._writable_spec(entity)
        self._check_id(record_id)
        await self.request("DELETE", f"{self.api_root}/sobjects/{spec.sobject}/{record_id}")

    # -- webhooks ----------------------------------------------------------------------

    def validate_webhook_signature(self, request: WebhookRequest, secret: str) -> bool:
        """CDC relay: the Standard Webhooks signature. Outbound Message: the message's
        OrganizationId is the integration's org (malformed XML is not valid)."""
        keys = wh.WebhookSecret.parse(secret)
        if wh.is_relayed_event(request):
            return bool(keys.relay_secret) and wh.verify_relay(
                request, keys.relay_secret or "", self.clock.now()
            )
        if wh.is_outbound_message(request) and keys.organization_id:
            try:
                message = wh.parse_outbound_xml(request.body)
            except AdapterValidationError:
                return False
            return wh.same_org(keys.organization_id, message.organization_id)
        return False

    def handle_webhook_handshake(
        self, request: WebhookRequest, secret: str
    ) -> WebhookResponse | None:
        return None  # Salesforce has no subscription handshake.

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """Events in an Outbound Message or a relayed change event. Raises
        AdapterValidationError (status 400) for a malformed body."""
        if wh.is_relayed_event(request) or not wh.is_outbound_message(request):
            return wh.change_events(request.body)
        return wh.outbound_events(wh.parse_outbound_xml(request.body))

    def webhook_ack(self, request: WebhookRequest) -> WebhookResponse | None:
        """What to answer a verified delivery with: an Outbound Message must get the SOAP
        ``notificationsResponse``/``Ack`` or Salesforce keeps resending it; a relayed
        event needs nothing special (None)."""
        if wh.is_relayed_event(request) or not wh.is_outbound_message(request):
            return None
        return wh.ack_response()

    def webhook_delivery_response(self, request: WebhookRequest) -> WebhookResponse | None:
        return self.webhook_ack(request)

    def webhook_rejection(self, request: WebhookRequest, secret: str) -> WebhookResponse | None:
        """A clear 4xx for a delivery that fails verification (None when it passes)."""
        if wh.is_relayed_event(request) or not wh.is_outbound_message(request):
            if self.validate_webhook_signature(request, secret):
                return None
            return WebhookResponse(status_code=401, body=b"invalid webhook signature")
        keys = wh.WebhookSecret.parse(secret)
        try:
            message = wh.parse_outbound_xml(request.body)
        except AdapterValidationError as exc:
            return WebhookResponse(
                status_code=exc.status_code or 400, body=exc.user_message.encode()
            )
        if not keys.organization_id or not wh.same_org(
            keys.organization_id, message.organization_id
        ):
            return WebhookResponse(
                status_code=403, body=b"the outbound message is from another organization"
            )
        return None

    # -- helpers -----------------------------------------------------------------------

    def _writable_spec(self, entity: str) -> EntitySpec:
        spec = self.spec(entity)
        if not spec.writable:
            raise NotSupportedError(f"Salesforce {spec.name} records are synced inbound only")
        return spec

    @staticmethod
    def _check_id(record_id: str) -> None:
        if not isinstance(record_id, str) or not _RECORD_ID.fullmatch(record_id):
            raise NotFoundError(
                "the Salesforce record or resource does not exist",
                detail="not a 15- or 18-character record id",
                status_code=404,
            )

    @staticmethod
    def _fields(spec: EntitySpec, fields: list[str] | None) -> list[str]:
        if not fields:
            return [name for name in spec.all_fields if name != "IsDeleted"]
        chosen: list[str] = []
        for name in fields:
            canonical = spec.canonical(name) or (name if _CUSTOM_FIELD.fullmatch(name) else None)
            if canonical is None:
                raise invalid(f"{name!r} is not a {spec.name} field")
            chosen.append(canonical)
        return chosen

    @staticmethod
    def _payload(spec: EntitySpec, data: dict[str, Any]) -> dict[str, Any]:
        writable = spec.writable_fields()
        payload: dict[str, Any] = {}
        for name, value in data.items():
            canonical = spec.canonical(name)
            if canonical in writable:
                payload[canonical] = value
            elif canonical is None and _CUSTOM_FIELD.fullmatch(name):
                payload[name] = value
            else:
                raise invalid(f"{name!r} cannot be written on a Salesforce {spec.name}")
        return payload

    @staticmethod
    def _record(raw: dict[str, Any]) -> ExternalRecord:
        data = {k: v for k, v in raw.items() if k != "attributes"}
        return ExternalRecord(
            external_id=str(data.get("Id")),
            data=data,
            modified_at=parse_sf_datetime(data.get("SystemModstamp")),
            deleted=data.get("IsDeleted") is True,
        )

    @staticmethod
    def _encode_keyset(raw: dict[str, Any]) -> str:
        stamp = parse_sf_datetime(raw.get("SystemModstamp"))
        record_id = raw.get("Id")
        if stamp is None or not isinstance(record_id, str):
            raise PermanentError("a Salesforce record lacks SystemModstamp or Id")
        return f"{_KEYSET_PREFIX}{stamp.isoformat()}|{record_id}"

    @staticmethod
    def _decode_keyset(cursor: str) -> tuple[str, str]:
        if not cursor.startswith(_KEYSET_PREFIX):
            raise invalid("the page cursor is not one this adapter issued")
        stamp, _, record_id = cursor[len(_KEYSET_PREFIX) :].partition("|")
        if parse_sf_datetime(stamp) is None or not _RECORD_ID.fullmatch(record_id):
            raise invalid("the page cursor is damaged")
        return stamp, record_id


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")
