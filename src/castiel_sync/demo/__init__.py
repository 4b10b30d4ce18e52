"""``castiel-sync demo``: the embedded default, a bundled provider emulator on loopback and
a demo tenant, walked through step by step (:mod:`castiel_sync.demo.runner`)."""

from castiel_sync.demo.runner import DemoOptions, DemoReport, StepResult, run_demo

__all__ = ["DemoOptions", "DemoReport", "StepResult", "run_demo"]
