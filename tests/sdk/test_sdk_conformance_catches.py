"""The conformance suite can fail: broken variants of the reference adapter are caught."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from castiel_sync.sdk import (
    Credentials,
    FetchOptions,
    FetchResult,
    HttpAdapter,
    RateLimitedError,
    TransientError,
)
from castiel_sync.testing.conformance import AdapterConformance, RefreshCounter
from castiel_sync.testing.example import ExampleCrmAdapter, ExampleCrmEmulator


class IgnoresSince(ExampleCrmAdapter):
    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        return await super().fetch_records(entity, options.model_copy(update={"since": None}))


class RepeatsFirstPage(ExampleCrmAdapter):
    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        result = await super().fetch_records(entity, options.model_copy(update={"cursor": None}))
        return result.model_copy(update={"has_more": options.cursor is None})


class OversizedPages(ExampleCrmAdapter):
    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        return await super().fetch_records(entity, options.model_copy(update={"limit": 100}))


class NoRetries(ExampleCrmAdapter):
    retry_policy = ExampleCrmAdapter.retry_policy.__class__(max_attempts=1)


class LeaksToken(ExampleCrmAdapter):
    def redact(self, text: str) -> str:
        return text

    def error_detail(self, response: Any) -> str | None:
        assert self.credentials is not None and self.credentials.access_token is not None
        return "token " + self.credentials.access_token.get_secret_value()


def suite_for(adapter_class: type[HttpAdapter]) -> AdapterConformance:
    class Suite(AdapterConformance):
        entity = "contacts"

    Suite.adapter_class = adapter_class
    Suite.emulator_factory = ExampleCrmEmulator
    return Suite()


async def run(
    suite: AdapterConformance,
    test: Callable[..., Awaitable[None]],
    *,
    with_adapter: bool = True,
    with_refresher: bool = False,
) -> None:
    emulator = suite.make_emulator()
    refresher = RefreshCounter(lambda: suite.credentials(emulator))
    args: list[Any] = []
    if with_adapter:
        adapter = suite.make_adapter(emulator, refresher)
        await adapter.connect(suite.credentials(emulator))
        args.append(adapter)
    args.append(emulator)
    if with_refresher:
        args.append(refresher)
    await test(*args)


@pytest.mark.parametrize(
    ("adapter_class", "test_name", "expected"),
    [
        (IgnoresSince, "test_incremental_since_returns_exactly_the_changes", AssertionError),
        (RepeatsFirstPage, "test_full_fetch_pages_through_everything", AssertionError),
        (OversizedPages, "test_full_fetch_pages_through_everything", AssertionError),
        (NoRetries, "test_server_errors_retried", TransientError),
        (NoRetries, "test_rate_limit_burst_absorbed", RateLimitedError),
    ],
)
async def test_broken_adapter_fails_the_suite(
    adapter_class: type[HttpAdapter], test_name: str, expected: type[Exception]
) -> None:
    suite = suite_for(adapter_class)
    with pytest.raises(expected):
        await run(suite, getattr(suite, test_name))


async def test_token_leak_fails_bad_credentials_test() -> None:
    suite = suite_for(LeaksToken)
    with pytest.raises(AssertionError):
        await run(suite, suite.test_bad_credentials_fail_cleanly, with_adapter=False)


async def test_refreshing_twice_fails() -> None:
    class DoubleRefresh(ExampleCrmAdapter):
        async def connect(self, credentials: Credentials) -> None:
            await super().connect(credentials)
            assert self.token_refresher is not None
            await self.token_refresher()  # a needless extra refresh

    suite = suite_for(DoubleRefresh)
    with pytest.raises(AssertionError):
        await run(suite, suite.test_expired_token_refreshed_once_mid_fetch, with_refresher=True)


async def test_the_reference_adapter_passes_the_same_harness() -> None:
    suite = suite_for(ExampleCrmAdapter)
    await run(suite, suite.test_incremental_since_returns_exactly_the_changes)
    await run(suite, suite.test_server_errors_retried)
    await run(suite, suite.test_expired_token_refreshed_once_mid_fetch, with_refresher=True)
