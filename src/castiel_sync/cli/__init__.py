"""The ``castiel-sync`` command line."""
