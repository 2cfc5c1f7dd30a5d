"""`shopfloor audit` commands (filled in by issue 4/8)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Placeholder.", no_args_is_help=True)
