"""A third-party adapter shipped as its own package is found through the
``castiel_sync.adapters`` entry point and passes the same conformance suite.

The package (``tests/sdk/thirdparty_pkg``) is installed the way an installer lays out a
wheel: its modules copied into a fresh site directory next to a ``.dist-info`` holding
``METADATA`` and the ``entry_points.txt`` generated from its ``pyproject.toml``. The
directory goes on ``sys.path`` for this module only, works offline, and leaves the shared
virtualenv untouched.
"""

from __future__ import annotations

import configparser
import importlib
import shutil
import sys
import tomllib
from collections.abc import Iterator
from importlib.metadata import distribution
from pathlib import Path

import pytest

from castiel_sync.sdk import (
    ENTRY_POINT_GROUP,
    AdapterNotFoundError,
    HttpAdapter,
    available_adapters,
    get_adapter,
)
from castiel_sync.testing.conformance import AdapterConformance

PACKAGE_DIR = Path(__file__).parent / "thirdparty_pkg"
MODULE = "castiel_thirdparty_demo"


def install(site: Path) -> None:
    project = tomllib.loads((PACKAGE_DIR / "pyproject.toml").read_text())["project"]
    dist_name = project["name"].replace("-", "_")
    dist_info = site / f"{dist_name}-{project['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    entry_points = configparser.ConfigParser()
    entry_points.optionxform = str  # type: ignore[assignment,method-assign]
    for group, entries in project["entry-points"].items():
        entry_points[group] = entries
    with (dist_info / "entry_points.txt").open("w") as fh:
        entry_points.write(fh)
    shutil.copytree(PACKAGE_DIR / "src" / MODULE, site / MODULE)
    files = [p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()]
    (dist_info / "RECORD").write_text("".join(f"{f},,\n" for f in files))


def forget_module() -> None:
    for name in [n for n in sys.modules if n == MODULE or n.startswith(MODULE + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="module", autouse=True)
def thirdparty_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    site = tmp_path_factory.mktemp("thirdparty-site")
    install(site)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        forget_module()
        importlib.invalidate_caches()


def test_entry_point_declared_by_the_package_is_found(thirdparty_installed: Path) -> None:
    dist = distribution("castiel-thirdparty-demo")
    (ep,) = [e for e in dist.entry_points if e.group == ENTRY_POINT_GROUP]
    assert ep.name == "thirdparty_demo"
    adapter_class = get_adapter("thirdparty_demo")
    assert issubclass(adapter_class, HttpAdapter)
    assert adapter_class.__module__ == MODULE
    assert Path(sys.modules[MODULE].__file__ or "").is_relative_to(thirdparty_installed)
    assert available_adapters()["thirdparty_demo"] is adapter_class


def test_unknown_provider_is_not_found() -> None:
    with pytest.raises(AdapterNotFoundError):
        get_adapter("no_such_provider")


class TestThirdPartyConformance(AdapterConformance):
    adapter_class = "thirdparty_demo"  # resolved through get_adapter(), i.e. the entry point
    emulator_factory = "castiel_thirdparty_demo.emulator:DemoEmulator"
    entity = "widgets"
