"""Provider emulators built on the kit (:mod:`castiel_sync.testing`), one module each."""
