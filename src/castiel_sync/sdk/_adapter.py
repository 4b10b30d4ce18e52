"""The ``IntegrationAdapter`` contract (DESIGN.md §4). Its names are public and stable."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from castiel_sync.sdk._errors import NotSupportedError
from castiel_sync.sdk._types import (
    ConnectionTestResult,
    Credentials,
    ExternalRecord,
    FetchOptions,
    FetchResult,
    WebhookEvent,
    WebhookRegistration,
    WebhookRequest,
    WebhookResponse,
)


class IntegrationAdapter(ABC):
    """One provider's API. Constructed with no arguments; ``connect`` hands it credentials.

    Webhook verification, handshakes and parsing need no connection: the caller passes the
    integration's webhook secret.
    """

    provider_id: ClassVar[str]

    @abstractmethod
    async def connect(self, credentials: Credentials) -> None: ...

    @abstractmethod
    async def disconnect(self) -> None: ...

    @abstractmethod
    async def test_connection(self) -> ConnectionTestResult: ...

    @abstractmethod
    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult: ...

    async def fetch_record(self, entity: str, record_id: str) -> ExternalRecord | None:
        """One record by id (webhook payloads that carry only an id). None when gone."""
        raise NotSupportedError(f"{self.provider_id} cannot fetch a single {entity}")

    async def find_record(self, entity: str, match: dict[str, Any]) -> ExternalRecord | None:
        """A record whose fields equal every value in ``match`` (external field names), or
        None. The write-back worker asks before creating again after an ambiguous failure
        (a create sent but not answered), so the provider never gets a duplicate."""
        raise NotSupportedError(f"{self.provider_id} cannot look {entity} records up")

    async def create_record(self, entity: str, data: dict[str, Any]) -> str:
        raise NotSupportedError(f"{self.provider_id} does not support creating {entity}")

    async def update_record(self, entity: str, record_id: str, data: dict[str, Any]) -> None:
        raise NotSupportedError(f"{self.provider_id} does not support updating {entity}")

    async def delete_record(self, entity: str, record_id: str) -> None:
        raise NotSupportedError(f"{self.provider_id} does not support deleting {entity}")

    async def register_webhook(self, events: list[str], callback_url: str) -> WebhookRegistration:
        raise NotSupportedError(f"{self.provider_id} has no webhook registration")

    def validate_webhook_signature(self, request: WebhookRequest, secret: str) -> bool:
        return False

    def handle_webhook_handshake(
        self, request: WebhookRequest, secret: str
    ) -> WebhookResponse | None:
        return None

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        raise NotSupportedError(f"{self.provider_id} has no webhooks")

    def webhook_delivery_response(self, request: WebhookRequest) -> WebhookResponse | None:
        """What to answer a verified, ordinary delivery with, when the provider requires a
        specific answer (Salesforce Outbound Messages need a SOAP ``Ack``). None: the
        receiver answers 202 with no body."""
        return None
