"""``castiel-sync vault``: maintenance of the local vault."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from castiel_sync.settings import Settings

app = typer.Typer(name="vault", help="Local vault maintenance.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command("rotate-master-key")
def rotate_master_key(
    batch_size: Annotated[
        int, typer.Option(min=1, help="Data keys re-wrapped per transaction.")
    ] = 500,
) -> None:
    """Generate a new master key, re-wrap every data key under it, retire the old keys.

    Values are not re-encrypted, and the service may keep running meanwhile.
    """
    settings = Settings()
    if settings.vault != "local":
        raise _fail("rotate-master-key is for the local vault (CASTIEL_VAULT=local)", 2)
    if settings.master_key is not None:
        raise _fail(
            "the master key comes from CASTIEL_MASTER_KEY, which this command cannot rewrite; "
            "move it to a key file (mode 0600, CASTIEL_MASTER_KEY_FILE) and unset the variable",
            2,
        )
    asyncio.run(_rotate(settings, batch_size))


async def _rotate(settings: Settings, batch_size: int) -> None:
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    from castiel_sync.store.base import create_engine
    from castiel_sync.vault.base import VaultError
    from castiel_sync.vault.keyring import KeyFile, generate_master_key
    from castiel_sync.vault.local import LocalVault, VaultSecretRow

    url = settings.resolved_database_url
    shown_url = make_url(url).render_as_string(hide_password=True)
    if settings.database_url is None and not (settings.data_dir / "castiel.db").exists():
        raise _fail(f"no database in {settings.data_dir}: run `castiel-sync db upgrade` first")
    key_file = settings.resolved_master_key_file
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            table = VaultSecretRow.__tablename__
            present = await conn.run_sync(lambda c: inspect(c).has_table(table))
        if not present:
            raise _fail(
                f"{shown_url} has no {table} table yet: run `castiel-sync db upgrade` first"
            )
        typer.echo(f"Rotating the local vault's master key ({shown_url}, key file {key_file})")

        async def progress(done: int) -> None:
            typer.echo(f"  {done} data keys re-wrapped")

        try:
            vault = LocalVault(engine, KeyFile(key_file))
            report = await vault.rotate_master_key(
                generate_master_key(), batch_size=batch_size, on_batch=progress
            )
        except VaultError as exc:
            raise _fail(str(exc)) from None
    finally:
        await engine.dispose()
    typer.echo(
        f"Re-wrapped {report.rewrapped} data keys in {report.batches} "
        f"batch{'' if report.batches == 1 else 'es'} under master key {report.new_key_id}."
    )
    if not report.ok:
        for item in report.failed:
            typer.echo(f"  could not unwrap {item}", err=True)
        raise _fail(
            f"{len(report.failed)} secret versions could not be unwrapped; the old keys stay in "
            f"{key_file} (active key {report.new_key_id}). Fix or delete those secrets and run "
            "this command again."
        )
    retired = ", ".join(report.retired_key_ids) or "none"
    typer.echo(f"Retired master keys: {retired}. Keyring written to {key_file}.")
