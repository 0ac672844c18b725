"""``gguf-embed merge``: shard indexes into one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..index import Index
from ..merge import DUPLICATES
from ._base import cli, terminal_text
from ._index import _tell_waiting, stage_line


@cli.command()
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("shards", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--duplicates", type=click.Choice(DUPLICATES), default="newest",
              show_default=True,
              help="A path held twice: keep the copy with the newer mtime, or refuse the shard.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def merge(out: Path, shards: tuple[Path, ...], duplicates: str, as_json: bool) -> None:
    """Merge the index files SHARDS into OUT (created if missing), without re-embedding."""
    total = len(shards)
    done = [0]

    def tell(shard: Path, counts: Any) -> None:
        done[0] += 1
        click.echo(terminal_text(
            f"merged {shard} ({done[0]}/{total}): {counts.documents} documents, "
            f"{counts.chunks} chunks"), err=True)

    with Index(out, on_wait=_tell_waiting(out)) as index:
        summary = index.merge_from(list(shards), duplicates=duplicates, on_shard=tell,
                                   on_stage=lambda s: click.echo(stage_line(s), err=True))
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
        return
    s = summary
    click.echo(f"merged {s.shards} shards into {terminal_text(str(out))}: {s.documents} "
               f"documents, {s.chunks} chunks in {s.seconds:.1f} s")
    click.echo(f"duplicates: {s.replaced} replaced by a newer copy, {s.kept} older copies "
               f"skipped")
    for path in s.empty:
        click.echo(terminal_text(f"  empty shard (no index yet): {path}"))
