"""The store's errors.

StoreError            base; ``str(error)`` is safe to show a user (no SQL, no values)
+-- NotFoundError     no such object *in your scope*: another tenant's object and a
|                     missing one raise the same error with the same message
+-- ConflictError     a unique key is taken, or an optimistic lock was lost
+-- ScopeError        a tenant-only method called with a SystemScope (or a
                      system-only one with a TenantScope): a programming error
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's errors; the message is safe for users."""

    @property
    def message(self) -> str:
        return str(self)


class NotFoundError(StoreError):
    def __init__(self, object_type: str, object_id: object) -> None:
        self.object_type = object_type
        self.object_id = str(object_id)
        super().__init__(f"{object_type} {self.object_id!r} was not found")


class ConflictError(StoreError):
    pass


class ScopeError(StoreError):
    pass


__all__ = ["ConflictError", "NotFoundError", "ScopeError", "StoreError"]
