"""``--db`` and how result paths are shown: shared by the commands that read an index, apart
from _index.py so that ``gguf-embed search`` does not import the indexer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ._base import terminal_text


def default_db() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("gguf-embed")) / "index.db"


class _DbOption(click.Option):
    """``--db``, whose help names the default file, found (platformdirs) only when the help
    is shown."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = f"The index file [env: GGUF_EMBED_DB; default: {default_db()}]."
        return super().get_help_record(ctx)


def db_option(func: Any) -> Any:
    return click.option(
        "--db", type=click.Path(dir_okay=False, path_type=Path), envvar="GGUF_EMBED_DB",
        default=None, cls=_DbOption, help="The index file [env: GGUF_EMBED_DB].")(func)


def display(path: str) -> str:
    """A path for a terminal: relative when under the current folder, escaped; absolute
    when there is no current folder (deleted while the shell was in it)."""
    try:
        rel = os.path.relpath(path)
    except (ValueError, OSError):
        rel = path
    return terminal_text(path if rel.startswith("..") else rel)
