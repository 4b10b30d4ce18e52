"""Dotted paths into nested JSON-like data: ``BillingAddress.City``, ``Emails.0.Address``.

A segment made of digits indexes a list when the value at that point is a list, and is an
ordinary key when it is a dict. Keys containing a dot cannot be addressed.

Reading distinguishes a value that is absent (:data:`MISSING`) from one that is ``None``:

- an absent key, an index past the end, or a scalar in the middle of the path -> ``MISSING``;
- an explicit ``null`` in the middle of the path (``{"BillingAddress": null}`` read at
  ``BillingAddress.City``) -> ``None``: a cleared parent clears its children.

Writing creates what is missing on the way: a dict, or a list when the next segment is an
index. An index past the end of a list pads it with ``None``. A ``None`` in the middle of
the path is replaced by a new container; a scalar there is an error (:class:`PathError`).
"""

from __future__ import annotations

from typing import Any, Final, final

__all__ = [
    "MISSING",
    "Missing",
    "Path",
    "PathError",
    "compile_path",
    "delete_path",
    "get_path",
    "set_path",
]


@final
class Missing:
    """The type of :data:`MISSING`: a value that is not there at all (unlike ``None``)."""

    _instance: Missing | None = None

    def __new__(cls) -> Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()


class PathError(ValueError):
    """A path is malformed, or a write meets a scalar where a container must be."""


class Path:
    """A parsed dotted path; parse once, read and write many records."""

    __slots__ = ("_index", "_keys", "text")

    def __init__(self, text: str) -> None:
        if not text or any(not part for part in text.split(".")):
            raise PathError(f"not a dotted path: {text!r}")
        self.text = text
        self._keys: tuple[str, ...] = tuple(text.split("."))
        # The list index each segment would mean, or None when it is not a number.
        self._index: tuple[int | None, ...] = tuple(
            int(k) if k.isascii() and k.isdigit() else None for k in self._keys
        )

    def __repr__(self) -> str:
        return f"Path({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Path) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    @property
    def parts(self) -> tuple[str, ...]:
        return self._keys

    def get(self, data: Any) -> Any:
        """The value at this path, ``MISSING`` if absent (see the module docstring)."""
        node = data
        for key, index in zip(self._keys, self._index, strict=True):
            if isinstance(node, dict):
                node = node.get(key, MISSING)
                if node is MISSING:
                    return MISSING
            elif node is None:
                return None
            elif isinstance(node, list) and index is not None:
                if index >= len(node):
                    return MISSING
                node = node[index]
            else:
                return MISSING
        return node

    def set(self, data: dict[str, Any], value: Any) -> None:
        """Write ``value`` at this path in ``data``, creating containers on the way."""
        node: Any = data
        last = len(self._keys) - 1
        for position, (key, index) in enumerate(zip(self._keys, self._index, strict=True)):
            if position == last:
                _put(node, key, index, value, self.text)
                return
            child = _peek(node, key, index)
            if child is MISSING or child is None:
                child = [] if self._index[position + 1] is not None else {}
                _put(node, key, index, child, self.text)
            elif not isinstance(child, dict | list):
                raise PathError(
                    f"cannot write {self.text!r}: {'.'.join(self._keys[: position + 1])!r} "
                    f"holds a {type(child).__name__}, not an object"
                )
            node = child

    def delete(self, data: dict[str, Any]) -> bool:
        """Remove the value at this path; True if there was one. List items become None
        (removing them would shift the indexes other paths use)."""
        node: Any = data
        for key, index in zip(self._keys[:-1], self._index[:-1], strict=True):
            node = _peek(node, key, index)
            if not isinstance(node, dict | list):
                return False
        key, index = self._keys[-1], self._index[-1]
        if isinstance(node, dict):
            return node.pop(key, MISSING) is not MISSING
        if isinstance(node, list) and index is not None and index < len(node):
            node[index] = None
            return True
        return False


def _peek(node: Any, key: str, index: int | None) -> Any:
    if isinstance(node, dict):
        return node.get(key, MISSING)
    if isinstance(node, list) and index is not None:
        return node[index] if index < len(node) else MISSING
    return MISSING


def _put(node: Any, key: str, index: int | None, value: Any, text: str) -> None:
    if isinstance(node, dict):
        node[key] = value
    elif isinstance(node, list):
        if index is None:
            raise PathError(f"cannot write {text!r}: {key!r} is not an index into a list")
        if index >= len(node):
            node.extend([None] * (index + 1 - len(node)))
        node[index] = value
    else:  # pragma: no cover - set() checks the parent's type before it gets here
        raise PathError(f"cannot write {text!r}: not a container")


_cache: dict[str, Path] = {}


def compile_path(text: str) -> Path:
    """A parsed :class:`Path`, cached by its text."""
    path = _cache.get(text)
    if path is None:
        if len(_cache) >= 10_000:
            _cache.clear()
        path = _cache[text] = Path(text)
    return path


def get_path(data: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``data``, or ``MISSING``."""
    return compile_path(path).get(data)


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Write ``value`` at dotted ``path``, creating intermediate dicts (or lists)."""
    compile_path(path).set(data, value)


def delete_path(data: dict[str, Any], path: str) -> bool:
    """Remove the value at dotted ``path``; True if there was one."""
    return compile_path(path).delete(data)
