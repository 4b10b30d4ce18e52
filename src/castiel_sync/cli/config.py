"""``castiel-sync config``: the configuration reference, generated from
:class:`castiel_sync.settings.Settings` (the README's table is this command's output)."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import typer
from pydantic.fields import FieldInfo

app = typer.Typer(help="Configuration (CASTIEL_* variables).", no_args_is_help=True)


def _type(info: FieldInfo) -> str:
    annotation = info.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if args and typing.get_origin(annotation) is not typing.Literal:
        inner = args[0]
        if typing.get_origin(inner) is typing.Literal:
            return " \\| ".join(f"`{a}`" for a in typing.get_args(inner))
        annotation = inner
    names = {str: "string", int: "integer", bool: "boolean", Path: "path", float: "number"}
    name = names.get(annotation)  # type: ignore[arg-type]
    if name is None:
        name = getattr(annotation, "__name__", str(annotation))
        name = {"SecretStr": "secret"}.get(name, name)
    return name


def _default(info: FieldInfo) -> str:
    value: Any = info.get_default(call_default_factory=True)
    if value is None:
        return "—"
    if value == "":
        return "empty"
    return f"`{value}`"


def reference_markdown() -> str:
    """The Markdown table of every setting: variable, type, default, description."""
    from castiel_sync.settings import Settings

    lines = [
        "| Variable | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        description = " ".join((info.description or "").split()).replace("|", "\\|")
        lines.append(
            f"| `CASTIEL_{name.upper()}` | {_type(info)} | {_default(info)} | {description} |"
        )
    return "\n".join(lines) + "\n"


@app.command()
def reference() -> None:
    """Print the configuration reference as a Markdown table."""
    typer.echo(reference_markdown(), nl=False)
