"""The README keeps its promises: its first command is `make demo` and that target runs
the demo (not `serve`), its second is `make test`, and its provider table names the
catalog's redirect path and scopes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from castiel_sync.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_two_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    target = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert target is not None
    assert "castiel-sync demo" in target.group(1) and "serve" not in target.group(1)


@pytest.mark.parametrize("provider", ["salesforce", "hubspot", "dynamics365"])
def test_provider_scopes_match_the_catalog(provider: str) -> None:
    spec = load_catalog().get(provider)
    assert spec.oauth is not None
    label = {"salesforce": "Salesforce", "hubspot": "HubSpot", "dynamics365": "Dynamics 365"}
    row = next(
        line for line in README.splitlines() if line.strip().startswith(f"| {label[provider]} |")
    )
    for scope in spec.oauth.scopes:
        assert f"`{scope}`" in row, (provider, scope)
    assert "/oauth/callback" in README
