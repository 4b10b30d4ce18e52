"""Paginators: small classes that turn one page's response into the next page's position.

Each has one job. :class:`BasePaginator` keeps the positions it has seen and raises
:class:`PaginationLoopError` when a provider hands back a position twice (a page loop);
a subclass implements only :meth:`BasePaginator.get_next`, and says how to request the
page at a position by overriding :meth:`BasePaginator.prepare` when the default (a query
parameter, or a whole next URL) does not fit.

    paginator = CursorParamPaginator("after", "paging.next.after")
    async for response in adapter.iter_pages("GET", "/crm/v3/objects/contacts", paginator):
        ...

Positions are strings so they can travel in ``FetchResult.next_cursor``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import httpx

from castiel_sync.sdk._errors import PermanentError


class PaginationLoopError(PermanentError):
    """The provider returned a page position it had already returned."""


def json_path(data: Any, path: str) -> Any:
    """``data["a"]["b"]`` for ``"a.b"``; None when any step is missing."""
    current = data
    for key in path.split("."):
        if isinstance(current, dict) and key in current:
            current = current[key]
        elif isinstance(current, list) and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            return None
    return current


class BasePaginator(ABC):
    """Tracks the current position and detects loops. Subclasses implement ``get_next``."""

    def __init__(self, start: str | None = None) -> None:
        self.current: str | None = start
        self.finished = False
        self.pages = 0
        self._seen: set[str] = {start} if start is not None else set()

    @abstractmethod
    def get_next(self, response: httpx.Response) -> str | None:
        """The position of the page after ``response``; None when it was the last."""

    def prepare(self, url: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The URL and query parameters that request the page at ``self.current``."""
        return url, params

    def advance(self, response: httpx.Response) -> str | None:
        """Move past ``response``; returns the next position (None at the end)."""
        self.pages += 1
        position = self.get_next(response)
        if position in (None, ""):
            self.finished = True
            self.current = None
            return None
        position = str(position)
        if position in self._seen:
            raise PaginationLoopError(
                "the provider returned the same page twice",
                detail=f"page position repeated after {self.pages} page(s)",
            )
        self._seen.add(position)
        self.current = position
        return position


class NextUrlPaginator(BasePaginator):
    """The response names the next page's URL in its JSON body (``nextRecordsUrl``,
    ``@odata.nextLink``, ``paging.next.link``). The next URL already carries the query."""

    def __init__(self, next_path: str = "next", start: str | None = None) -> None:
        super().__init__(start)
        self.next_path = next_path

    def get_next(self, response: httpx.Response) -> str | None:
        value = json_path(response.json(), self.next_path)
        return str(value) if value else None

    def prepare(self, url: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return (self.current, {}) if self.current else (url, params)


class LinkHeaderPaginator(NextUrlPaginator):
    """RFC 8288 ``Link: <...>; rel="next"`` headers."""

    def __init__(self, start: str | None = None) -> None:
        super().__init__("next", start)

    def get_next(self, response: httpx.Response) -> str | None:
        link = response.links.get("next")
        return link.get("url") if link else None


class CursorParamPaginator(BasePaginator):
    """An opaque cursor read from the body and sent back as a query parameter
    (HubSpot ``paging.next.after`` -> ``after``)."""

    def __init__(self, param: str, next_path: str, start: str | None = None) -> None:
        super().__init__(start)
        self.param = param
        self.next_path = next_path

    def get_next(self, response: httpx.Response) -> str | None:
        value = json_path(response.json(), self.next_path)
        return str(value) if value not in (None, "") else None

    def prepare(self, url: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if self.current is None:
            return url, params
        return url, {**params, self.param: self.current}
