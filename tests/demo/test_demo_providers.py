"""`castiel-sync demo --provider hubspot|dynamics365`: every step succeeds against that
provider's emulator, and the outcomes are where they should be on both sides."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from rich.console import Console

from castiel_sync.demo import DemoOptions, run_demo
from castiel_sync.demo.emulators import PROFILES


@pytest.mark.parametrize("provider", ["hubspot", "dynamics365"])
def test_demo_against_provider(provider: str, tmp_path: Path) -> None:
    out = io.StringIO()
    options = DemoOptions(
        provider=provider, data_dir=tmp_path / "data", port=0, records=60, non_interactive=True
    )
    report = asyncio.run(run_demo(options, Console(file=out, width=120)))
    assert report.ok, out.getvalue()
    profile, emulator = PROFILES[provider], report.emulator
    fields = profile.company_fields

    write_back = report.facts["write_back"]
    row = profile.read(emulator, write_back["entity"], write_back["externalId"])
    assert row[fields["website"]] == write_back["website"]

    webhook = report.facts["webhook"]
    row = profile.read(emulator, webhook["entity"], webhook["externalId"])
    assert row[fields["phone"]] == webhook["phone"]

    conflict = report.facts["conflict"]
    row = profile.read(emulator, conflict["entity"], conflict["externalId"])
    other = profile.other_field
    assert row[fields[other]] == conflict["final"][other] == conflict["alice"][other]
    assert row[fields["website"]] == conflict["final"]["website"] == "https://bob.example"
    assert row[fields["phone"]] == conflict["final"]["phone"] == conflict["bob"][fields["phone"]]
    assert conflict["decisions"]["phone"]["winner"] == "external"

    assert [r for r in emulator.requests if r.status == 429]
    assert report.facts["rate_limit"]["sync"]["status"] == "succeeded"
