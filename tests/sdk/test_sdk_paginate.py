"""Paginators: positions, request preparation, loop detection."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from castiel_sync.sdk import (
    Credentials,
    CursorParamPaginator,
    FetchOptions,
    FetchResult,
    HttpAdapter,
    LinkHeaderPaginator,
    NextUrlPaginator,
    PaginationLoopError,
    PermanentError,
    json_path,
)


def page(body: Any, **kw: Any) -> httpx.Response:
    return httpx.Response(200, json=body, **kw)


def test_json_path() -> None:
    data = {"paging": {"next": {"after": "abc"}}, "items": [{"id": 1}]}
    assert json_path(data, "paging.next.after") == "abc"
    assert json_path(data, "items.0.id") == 1
    assert json_path(data, "paging.prev.after") is None
    assert json_path(None, "a") is None


def test_cursor_param_paginator() -> None:
    p = CursorParamPaginator("after", "paging.next.after")
    assert p.prepare("/objects", {"limit": 10}) == ("/objects", {"limit": 10})
    assert p.advance(page({"paging": {"next": {"after": "c2"}}})) == "c2"
    assert p.prepare("/objects", {"limit": 10}) == ("/objects", {"limit": 10, "after": "c2"})
    assert p.advance(page({"results": []})) is None
    assert p.finished and p.pages == 2


def test_next_url_paginator_drops_params_for_next_url() -> None:
    p = NextUrlPaginator("nextRecordsUrl")
    assert p.prepare("/query", {"q": "SELECT Id"}) == ("/query", {"q": "SELECT Id"})
    p.advance(page({"nextRecordsUrl": "/query/01g-2000"}))
    assert p.prepare("/query", {"q": "SELECT Id"}) == ("/query/01g-2000", {})
    assert p.advance(page({"done": True})) is None


def test_link_header_paginator() -> None:
    p = LinkHeaderPaginator()
    nxt = page([], headers={"Link": '<https://api.test/items?page=2>; rel="next"'})
    assert p.advance(nxt) == "https://api.test/items?page=2"
    assert p.advance(page([])) is None


def test_same_cursor_twice_is_a_loop() -> None:
    p = CursorParamPaginator("cursor", "next")
    p.advance(page({"next": "a"}))
    p.advance(page({"next": "b"}))
    with pytest.raises(PaginationLoopError):
        p.advance(page({"next": "a"}))


def test_cursor_equal_to_start_is_a_loop() -> None:
    p = CursorParamPaginator("cursor", "next", start="a")
    with pytest.raises(PaginationLoopError) as info:
        p.advance(page({"next": "a"}))
    assert isinstance(info.value, PermanentError)


class Looping(HttpAdapter):
    provider_id = "looping"
    default_base_url = "https://api.loop.test"

    async def fetch_records(self, entity: str, options: FetchOptions) -> FetchResult:
        raise NotImplementedError


async def test_iter_pages_follows_and_stops_on_loop() -> None:
    pages = {None: "p2", "p2": "p3", "p3": "p2"}

    def answer(request: httpx.Request) -> httpx.Response:
        return page({"next": pages[request.url.params.get("cursor")]})

    adapter = Looping().configure(transport=httpx.MockTransport(answer))
    await adapter.connect(Credentials(access_token="t"))
    seen = []
    with pytest.raises(PaginationLoopError):
        async for response in adapter.iter_pages(
            "GET", "/items", CursorParamPaginator("cursor", "next")
        ):
            seen.append(response.request.url.params.get("cursor"))
    # the page that points back is refused, not yielded
    assert seen == [None, "p2"]


async def test_iter_pages_ends() -> None:
    pages = {None: "p2", "p2": None}

    def answer(request: httpx.Request) -> httpx.Response:
        return page({"next": pages[request.url.params.get("cursor")]})

    adapter = Looping().configure(transport=httpx.MockTransport(answer))
    await adapter.connect(Credentials(access_token="t"))
    got = [r async for r in adapter.iter_pages("GET", "/i", CursorParamPaginator("cursor", "next"))]
    assert len(got) == 2
