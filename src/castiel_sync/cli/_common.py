"""What every operator command shares: how the CLI reaches the system, and how it answers.

**How the CLI reaches the system.** Operator commands run on the deployment's own
configuration (``CASTIEL_*`` variables, as ``serve`` reads them) and talk to the store,
the vault and the sync engine directly, in this process, like ``db`` and ``vault`` do.
Nothing needs to be running, no token is needed, and every tenant-owned object is reached
through a repository built for the tenant named with ``--tenant``: another tenant's
integration is "not found", exactly as in the API.

**How it answers.**

- Tables (colours when a terminal is attached); ``--json`` on every listing prints valid
  JSON with stable camelCase keys, for scripts.
- Errors are one line on stderr, ``error: <what to do>``; nothing is changed.
- Exit codes:

  ===  =====================================================================
  0    done
  1    failed (a sync failed, the database is missing, a conflict is closed)
  2    usage (a bad option or value; typer's own usage errors are 2 as well)
  3    not found (no such integration, execution or conflict in this tenant)
  ===  =====================================================================
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from castiel_sync.settings import Settings

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

TENANT_ID = re.compile(r"[0-9a-z]{1,64}")


def _tenant_param(value: str | None) -> str | None:
    if value is not None and not TENANT_ID.fullmatch(value):
        raise typer.BadParameter(
            f"{value!r} is not a tenant id (1 to 64 lowercase letters and digits)"
        )
    return value


TenantOption = Annotated[
    str,
    typer.Option(
        "--tenant",
        "-t",
        help="The tenant to act for (lowercase letters and digits).",
        envvar="CASTIEL_TENANT",
        callback=_tenant_param,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


class CliError(Exception):
    """A failure with a message for the operator and the exit code it means."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    raise CliError(message, code)


def usage(message: str) -> NoReturn:
    """A bad option value found before anything runs: one line, exit 2."""
    err_console().print(f"[red]error:[/red] {message}")
    raise typer.Exit(EXIT_USAGE)


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def out_console() -> Console:
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:  # piped or captured: no wrapping of table cells at 80
        console.width = max(console.width, 200)
    return console


def check_tenant(tenant: str) -> str:
    if not TENANT_ID.fullmatch(tenant):
        usage(f"--tenant {tenant!r} is not a tenant id (1 to 64 lowercase letters and digits)")
    return tenant


def run(action: Callable[[], Awaitable[T]]) -> T:
    """Run an async command body; a :class:`CliError` becomes its one-line message and
    exit code, and store errors their meaning (not found: 3, conflict: 1)."""
    from castiel_sync.store.errors import ConflictError, NotFoundError

    try:
        return asyncio.run(_call(action))
    except CliError as exc:
        err_console().print(f"[red]error:[/red] {exc}", markup=True)
        raise typer.Exit(exc.code) from None
    except NotFoundError as exc:
        err_console().print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_NOT_FOUND) from None
    except ConflictError as exc:
        err_console().print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_FAILURE) from None


async def _call(action: Callable[[], Awaitable[T]]) -> T:
    return await action()


# -- the system ---------------------------------------------------------------------------


@dataclass
class System:
    """The deployment as the CLI sees it: settings, store, and (on first use) the vault."""

    settings: Settings
    store: Any  # castiel_sync.store.Store

    @cached_property
    def vault(self) -> Any:
        from castiel_sync.vault import open_vault

        return open_vault(self.settings, self.store.engine)

    def scope(self, tenant: str) -> Any:
        from castiel_sync.domain.tenancy import TenantId, TenantScope

        return TenantScope(TenantId(check_tenant(tenant)))


def load_settings() -> Settings:
    """The deployment's settings, read now (not the process-wide cached copy)."""
    try:
        return Settings()
    except Exception as exc:  # pydantic's ValidationError names the variable
        fail(f"the configuration is invalid: {exc}".splitlines()[0], EXIT_USAGE)


@asynccontextmanager
async def open_system(settings: Settings | None = None) -> AsyncIterator[System]:
    """The store (and vault) of this deployment. Refuses, changing nothing, when the
    embedded database does not exist yet or is not migrated."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import DBAPIError

    from castiel_sync.store import Store
    from castiel_sync.store.base import create_engine

    settings = settings or load_settings()
    if not settings.database_url and not (settings.data_dir / "castiel.db").exists():
        fail(
            f"no database in {settings.data_dir}/: run `castiel-sync db upgrade` "
            "(or `castiel-sync serve`) first, or set CASTIEL_DATA_DIR / CASTIEL_DATABASE_URL"
        )
    engine = create_engine(settings.resolved_database_url)
    try:
        try:
            async with engine.connect() as conn:
                present = await conn.run_sync(lambda c: inspect(c).has_table("integrations"))
        except (OSError, DBAPIError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            fail(f"the database cannot be reached ({reason})")
        if not present:
            fail("the database has no schema yet: run `castiel-sync db upgrade` first")
        yield System(settings, Store(engine))
    finally:
        await engine.dispose()


def operator() -> str:
    """Who the audit log names for a CLI change."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # no login name in some containers
        user = "unknown"
    return f"cli:{user}"[:64]


# -- output -------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(jsonable(value), indent=2, sort_keys=False, ensure_ascii=False))


def when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M:%S")


STATUS_STYLE = {
    "active": "green",
    "succeeded": "green",
    "resolved": "green",
    "synced": "green",
    "pending": "yellow",
    "running": "cyan",
    "partial": "yellow",
    "open": "yellow",
    "paused": "yellow",
    "error": "red",
    "failed": "red",
    "disabled": "red",
}


def status_text(status: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else status


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    empty: str,
) -> None:
    console = out_console()
    if not rows:
        console.print(empty)
        return
    table = Table(title=title, show_lines=False, header_style="bold", title_justify="left")
    for column in columns:
        numeric = column in {"fetched", "created", "updated", "unchanged", "deleted", "failed"}
        table.add_column(column, justify="right" if numeric else "left", overflow="fold")
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    console.print(table)


def print_fields(title: str, fields: Sequence[tuple[str, Any]]) -> None:
    console = out_console()
    console.print(f"[bold]{title}[/bold]")
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        console.print(f"  {name.ljust(width)}  {'-' if value is None else value}")


__all__ = [
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "JsonOption",
    "System",
    "TenantOption",
    "check_tenant",
    "fail",
    "jsonable",
    "load_settings",
    "open_system",
    "operator",
    "print_fields",
    "print_json",
    "print_table",
    "run",
    "status_text",
    "usage",
    "when",
]
