"""``gguf-embed index``, ``search`` and ``status``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..chunking import ChunkSettings
from ..index import Index
from ..indexer import IndexSummary, Progress
from ..search import MODES, SearchResult
from ._base import cli, load_engine, model_options


def default_db() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("gguf-embed")) / "index.db"


def db_option(func: Any) -> Any:
    return click.option(
        "--db", type=click.Path(dir_okay=False, path_type=Path), envvar="GGUF_EMBED_DB",
        default=None,
        help=f"The index file [env: GGUF_EMBED_DB; default: {default_db()}].")(func)


def recorded_model(db: Path) -> str | None:
    """The model an existing index was built with (so search and updates use it)."""
    if not db.exists():
        return None
    with Index(db, readonly=True) as index:
        return index.meta.get("model")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@db_option
@model_options
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files matching (repeatable).")
@click.option("--no-ignore", is_flag=True, help="Do not read .gitignore / .ggufembedignore.")
@click.option("--reindex", is_flag=True, help="Rebuild the index from scratch (needed to "
              "change model, dimensions or chunking).")
@click.option("-d", "--dimensions", type=int, default=None,
              help="Store vectors cut to this size (Matryoshka).")
@click.option("--chunk-tokens", type=int, default=None,
              help="Tokens per chunk [default: fitted to the model's context].")
@click.option("--chunk-overlap", type=int, default=None, help="Tokens shared by neighbours.")
@click.option("--max-file-size", type=float, default=50.0, show_default=True,
              help="Skip files larger than this many MB.")
@click.option("--progress/--no-progress", default=None,
              help="Progress on stderr [default: when stderr is a terminal].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def index(paths: tuple[Path, ...], db: Path | None, model: str | None, offline: bool,
          hf_endpoint: str | None, cache_dir: str | None, include: tuple[str, ...],
          exclude: tuple[str, ...], no_ignore: bool, reindex: bool, dimensions: int | None,
          chunk_tokens: int | None, chunk_overlap: int | None, max_file_size: float,
          progress: bool | None, as_json: bool) -> None:
    """Index the files under PATHS: new and changed files are embedded, deleted ones removed."""
    db = db or default_db()
    if not reindex:
        model = model or recorded_model(db)
    engine = load_engine(model, offline, hf_endpoint, cache_dir)
    chunking = None
    if chunk_tokens or chunk_overlap is not None:
        base = ChunkSettings.for_context(engine.max_tokens)
        chunking = ChunkSettings(chunk_tokens or base.max_tokens,
                                 base.overlap if chunk_overlap is None else chunk_overlap)
    show = sys.stderr.isatty() if progress is None else progress
    cancel = threading.Event()
    try:
        with _cancel_on_ctrl_c(cancel), Index(
                db, engine, dimensions=dimensions, chunking=chunking, reindex=reindex,
                model_ref=_model_ref(model, engine)) as idx:
            summary = idx.add(list(paths), include=include, exclude=exclude,
                              use_ignore_files=not no_ignore,
                              max_file_bytes=int(max_file_size * 1e6),
                              progress=_ProgressLine() if show else None, cancel=cancel)
    except KeyboardInterrupt:  # a second Ctrl-C: the batch in flight is rolled back
        click.echo(f"{chr(10) if show else ''}interrupted: files committed so far are kept; "
                   f"run the same command again to continue", err=True)
        sys.exit(130)
    if show:
        click.echo("", err=True)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary)
    if summary.cancelled:
        done = summary.added + summary.updated
        click.echo(f"interrupted: {done} files indexed and kept; run the same command again "
                   f"to continue", err=True)
        sys.exit(130)


@contextlib.contextmanager
def _cancel_on_ctrl_c(cancel: threading.Event) -> Iterator[None]:
    """The first Ctrl-C sets ``cancel`` (the run stops after the batch in flight); a second
    one raises KeyboardInterrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _model_ref(model: str | None, engine: Any) -> str:
    if model and (model.endswith(".gguf") and os.path.exists(model)):
        return os.path.abspath(model)
    return model or engine.spec.name


class _ProgressLine:
    """One status line on stderr, rewritten in place."""

    def __init__(self) -> None:
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and p.files_done < p.files_total:
            return
        self.last = now
        eta = f" · ETA {_clock(p.eta)}" if p.eta is not None else ""
        click.echo(f"\r\x1b[K{p.files_done}/{p.files_total} files · {p.chunks} chunks · "
                   f"{p.tokens_per_second:,.0f} tok/s{eta}", err=True, nl=False)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _print_summary(summary: IndexSummary) -> None:
    s = summary
    rate = s.tokens_embedded / s.seconds if s.seconds else 0.0
    click.echo(f"added {s.added}, updated {s.updated}, moved {s.moved}, removed {s.removed}, "
               f"unchanged {s.unchanged}, skipped {len(s.skipped)}, failed {len(s.failed)}")
    click.echo(f"{s.chunks} chunks written ({s.chunks_reused} reused), "
               f"{s.tokens_embedded:,} tokens embedded in {s.seconds:.1f} s ({rate:,.0f} tok/s)")
    for label, items in (("skipped", s.skipped), ("failed", s.failed)):
        for path, reason in items:
            click.echo(f"  {label}: {_display(path)}: {reason}")


def _display(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


@cli.command()
@click.argument("query")
@db_option
@model_options
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many results.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
@click.option("--path", "path_glob", default=None, metavar="GLOB",
              help="Only documents whose path matches (a folder, file or glob).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def search(query: str, db: Path | None, model: str | None, offline: bool,
           hf_endpoint: str | None, cache_dir: str | None, k: int, mode: str,
           path_glob: str | None, as_json: bool) -> None:
    """Search the index for QUERY ('-' reads queries from stdin, one per line, JSON Lines out)."""
    db = db or default_db()
    with Index(db, readonly=True) as probe:
        model = model or probe.meta.get("model")
    engine = None if mode == "keyword" else load_engine(model, offline, hf_endpoint, cache_dir)
    with Index(db, engine, readonly=True, model_ref=model) as idx:
        if query == "-":
            queries = [line for line in sys.stdin.read().splitlines() if line.strip()]
            for results in idx.search_many(queries, k=k, mode=mode, path=path_glob):
                click.echo(json.dumps([_row(r) for r in results]))
            return
        results = idx.search(query, k=k, mode=mode, path=path_glob)
    if as_json:
        click.echo(json.dumps([_row(r) for r in results], indent=2))
        return
    for r in results:
        pages = ""
        if r.start_page is not None:
            pages = f" (p. {r.start_page}" + (f"-{r.end_page}" if r.end_page != r.start_page
                                              else "") + ")"
        click.echo(f"{_display(r.path)}:{r.start_line}-{r.end_line}{pages}  {r.score:.4f}")
        click.echo(f"    {r.snippet}")


def _row(result: SearchResult) -> dict[str, Any]:
    return result.to_dict()


@cli.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(db: Path | None, as_json: bool) -> None:
    """What the index holds: model, dimensions, documents, chunks, size, last run."""
    db = db or default_db()
    with Index(db, readonly=True) as idx:
        info = idx.status()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    last = info["last_run"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started_at"])) if last \
        else "never"
    click.echo(f"index:     {info['path']}")
    click.echo(f"model:     {info['model']} ({info['model_file']})")
    click.echo(f"dims:      {info['dims']}  pooling: {info['pooling']}  "
               f"chunks of {info['chunking']['max_tokens']} tokens" if info["chunking"] else
               f"dims:      {info['dims']}")
    click.echo(f"documents: {info['documents']}")
    click.echo(f"chunks:    {info['chunks']} ({info['tokens']:,} tokens)")
    click.echo(f"size:      {info['size_bytes'] / 1e6:.1f} MB")
    click.echo(f"last run:  {when}")
