"""Provider adapters shipped with castiel-sync, one package per provider.

Each imports only :mod:`castiel_sync.sdk` and is found through the ``castiel_sync.adapters``
entry-point group (``castiel_sync.sdk.get_adapter``).
"""
