"""The management API (FastAPI): auth, problem+json errors, and one route module per
resource under :mod:`castiel_sync.api.routes`."""

from castiel_sync.api.app import create_app

__all__ = ["create_app"]
