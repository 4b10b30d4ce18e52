"""``WebhookReceiver``: ``POST|GET /webhooks/{provider_id}/{integration_id}``.

Verify, persist raw, enqueue, answer at once; nothing slow in the request path (no
provider call). In order:

1. the body is read whole, up to ``max_webhook_body_bytes`` (larger: 413);
2. the integration is looked up by the URL (the URL is the only credential a provider
   has, and integration ids are random UUIDs). An unknown integration, a provider that is
   not the integration's, an integration with no webhook secret, or a provider with no
   installed adapter are all the same **404**, so the URL space tells nothing;
3. a provider handshake (Graph ``validationToken``, Zoom ``endpoint.url_validation``,
   Dropbox ``challenge``, Asana ``X-Hook-Secret``) is answered by the adapter with the
   integration's webhook secret from the vault; nothing is stored;
4. the signature is verified over the exact bytes received: a bad one is **401** (only a
   caller who already knows the endpoint's URL learns that it exists);
5. the payload must parse (the adapter's ``parse_webhook``, local work only): else **400**;
6. one transaction stores the raw delivery (``webhook_deliveries``) and publishes
   ``WebhookReceived`` through the outbox; the answer is **202** (or the adapter's
   ``webhook_delivery_response``, e.g. Salesforce's SOAP Ack).

Every refusal is problem+json and stores and enqueues nothing.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

import httpx
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import URL, Headers

from castiel_sync.api.deps import ContextDep
from castiel_sync.api.problems import BadRequest, NotFound, PayloadTooLarge, Problem
from castiel_sync.bus import publish
from castiel_sync.domain.events import webhook_received
from castiel_sync.domain.tenancy import SystemScope, TenantId, TenantScope
from castiel_sync.sdk import WebhookRequest, WebhookResponse
from castiel_sync.store.errors import NotFoundError
from castiel_sync.store.repositories import IntegrationRepository, WebhookDeliveryRepository

log = logging.getLogger("castiel_sync.webhooks")

router = APIRouter(tags=["webhooks"])

ProviderPath = Annotated[str, Path(pattern=r"^[a-z0-9]+(?:_[a-z0-9]+)*$", max_length=64)]
IntegrationPath = Annotated[str, Path(pattern=r"^[0-9a-zA-Z-]{1,36}$")]
#: Headers never stored with a delivery (credentials of the caller, not the payload).
_DROP_HEADERS = frozenset(
    {
        "authorization",
        "cookie",
        "proxy-authorization",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-functions-key",
    }
)
#: What a stored query value that was part of the secret becomes.
MASK = "[redacted]"


def _secret_bearing(value: str, secret: str) -> bool:
    """Whether ``value`` carries the endpoint's secret or a piece of it: a value found
    inside the secret (e.g. a Dataverse ``HttpHeader:x-key=<value>`` or ``?code=``
    key), raw or form-decoded, or a value that contains the whole secret."""
    if not value:
        return False
    return value in secret or value in unquote_plus(secret) or secret in value


def stored_url(url: URL, secret: str) -> str:
    """The request URL as stored with a delivery: query values that carry the secret
    masked (the adapters' ``parse_webhook`` reads the body, never the key)."""
    if not url.query:
        return str(url)
    pairs = parse_qsl(url.query, keep_blank_values=True)
    masked = [(k, MASK if _secret_bearing(v, secret) else v) for k, v in pairs]
    return str(url.replace(query=urlencode(masked)))


def stored_headers(headers: Headers, secret: str) -> dict[str, str]:
    """The delivery's headers without the caller's credentials and any secret value."""
    return {
        k: v
        for k, v in headers.items()
        if k.lower() not in _DROP_HEADERS and not _secret_bearing(v, secret)
    }


class InvalidSignature(Problem):
    status, title, slug = 401, "Invalid webhook signature", "invalid-signature"


def _no_endpoint() -> NotFound:
    return NotFound("no webhook endpoint is configured at this URL")


def _response(answer: WebhookResponse) -> Response:
    return Response(
        content=answer.body,
        status_code=answer.status_code,
        media_type=answer.media_type,
        headers=answer.headers,
    )


_ROUTE: dict[str, Any] = {
    "status_code": 202,
    "description": "No bearer token: the provider's signature authenticates the delivery. "
    "Answers handshakes; 202 once the delivery is stored and enqueued.",
    "responses": {
        401: {"description": "Signature invalid"},
        404: {"description": "No webhook endpoint at this URL"},
        413: {"description": "Body too large"},
    },
}
WEBHOOK_PATH = "/webhooks/{provider_id}/{integration_id}"


@router.get(
    WEBHOOK_PATH,
    summary="A provider's handshake or delivery by GET",
    operation_id="receive_webhook_get",
    **_ROUTE,
)
@router.post(
    WEBHOOK_PATH,
    summary="Receive a provider's webhook (verified, stored raw, enqueued)",
    operation_id="receive_webhook",
    **_ROUTE,
)
async def receive_webhook(
    ctx: ContextDep, request: Request, provider_id: ProviderPath, integration_id: IntegrationPath
) -> Response:
    limit = ctx.settings.max_webhook_body_bytes
    body = await request.body()
    if len(body) > limit:
        raise PayloadTooLarge(f"the request body is larger than {limit} bytes; send less")

    async with ctx.store.transaction() as session:
        try:
            row = await IntegrationRepository(
                session, SystemScope("webhook receiver: the URL names the integration")
            ).get(integration_id)
        except NotFoundError:
            raise _no_endpoint() from None
        tenant_id, secret_name = row.tenant_id, row.webhook_secret_name
        if row.provider_id != provider_id or not secret_name:
            raise _no_endpoint()
    try:
        adapter_cls = (ctx.get_adapter or _sdk_get_adapter)(provider_id)
        adapter = adapter_cls()
        secret = await ctx.vault.get(secret_name)
    except LookupError:  # no adapter installed, or the secret is gone
        raise _no_endpoint() from None

    wreq = WebhookRequest(
        method=request.method,
        url=str(request.url),
        headers=httpx.Headers(request.headers.raw),
        body=body,
    )
    handshake = adapter.handle_webhook_handshake(wreq, secret)
    if handshake is not None:
        return _response(handshake)
    if not adapter.validate_webhook_signature(wreq, secret):
        raise InvalidSignature("the webhook signature does not match this endpoint's secret")
    try:
        adapter.parse_webhook(wreq)
    except Exception as exc:  # the adapter's parse errors vary; the detail stays in the log
        log.info("malformed webhook for %s (%s)", provider_id, type(exc).__name__)
        raise BadRequest(f"the {provider_id} webhook payload could not be parsed") from None
    answer = adapter.webhook_delivery_response(wreq)

    headers = stored_headers(request.headers, secret)
    url = stored_url(request.url, secret)
    async with ctx.store.transaction() as session:
        delivery = await WebhookDeliveryRepository(session, TenantScope(TenantId(tenant_id))).add(
            integration_id=integration_id,
            headers={"_method": request.method, "_url": url, **headers},
            body=body,
        )
        publish(
            session,
            webhook_received(
                tenant_id=tenant_id,
                integration_id=integration_id,
                provider=provider_id,
                delivery_id=delivery.id,
            ),
        )
    if answer is not None:
        return _response(answer)
    content: dict[str, Any] = {"status": "accepted", "deliveryId": delivery.id}
    return JSONResponse(content, status_code=202)


def _sdk_get_adapter(provider_id: str) -> type[Any]:
    from castiel_sync.sdk import get_adapter

    return get_adapter(provider_id)
