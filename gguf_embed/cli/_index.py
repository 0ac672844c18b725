"""``gguf-embed index`` and ``status``."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ..chunking import ChunkSettings
from ..errors import InputError, quoted
from ..index import Index, check_roots
from ..indexer import IndexSummary, Progress
from ..indexer_records import Stage
from ._base import (
    DIMENSIONS,
    FiniteFloat,
    check_dimensions,
    cli,
    load_engine,
    model_options,
    terminal_text,
)
from ._db import db_option, default_db
from ._db import display as _display
from ._remote import remote_engine, remote_options, remote_url
from ._streams import stderr_is_terminal

MIN_CHUNK_TOKENS = 16


def max_file_size_option(func: Any) -> Any:
    return click.option("--max-file-size", type=FiniteFloat(min=0, min_open=True, max=1e9),
                        default=50.0,
                        show_default=True, help="Skip files larger than this many MB.")(func)


def walk_options(func: Any) -> Any:
    """Which files under PATHS a walk reads: ``index`` and ``watch`` take the same options."""
    for option in reversed((
            click.option("--include", multiple=True, metavar="GLOB",
                         help="Only files matching (repeatable)."),
            click.option("--exclude", multiple=True, metavar="GLOB",
                         help="Skip files matching (repeatable)."),
            click.option("--no-ignore", is_flag=True,
                         help="Do not read .gitignore / .ggufembedignore."),
            click.option("--follow-symlinks", is_flag=True,
                         help="Also index what symlinks inside PATHS lead to outside them (not "
                              "followed by default: see docs/security.md)."))):
        func = option(func)
    return func


_RAY_ADDRESS = re.compile(r"^(ray://)?[\w.\-\[\]:]+:\d+$")


def _check_ray_address(ctx: click.Context, param: click.Parameter,
                       value: str | None) -> str | None:
    if value is None or value in ("", "auto", "local") or _RAY_ADDRESS.match(value):
        return value
    hint = (" (it is a path: put --ray after the paths)"
            if os.path.exists(value) else "")
    raise click.BadParameter(f"{quoted(repr(value))} is not a Ray address: give auto, HOST:PORT or "
                             f"ray://HOST:PORT, or --ray alone{hint}", ctx, param)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@db_option
@model_options
@walk_options
@click.option("--reindex", is_flag=True, help="Rebuild the index from scratch (needed to "
              "change model, dimensions or chunking).")
@click.option("-d", "--dimensions", type=DIMENSIONS, default=None,
              help="Store vectors cut to this size (Matryoshka).")
@click.option("--chunk-tokens", type=click.IntRange(min=MIN_CHUNK_TOKENS), default=None,
              help="Tokens per chunk [default: fitted to the model's context].")
@click.option("--chunk-overlap", type=click.IntRange(min=0), default=None,
              help="Tokens shared by neighbours (less than the chunk size).")
@max_file_size_option
@click.option("--progress/--no-progress", default=None,
              help="Progress on stderr [default: when stderr is a terminal].")
@click.option("--prune-missing", is_flag=True,
              help="Remove the documents of PATHS that no longer exist (otherwise a missing "
                   "or unreadable PATH is an error and nothing changes).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="", default=None,
              metavar="[ADDRESS]", callback=_check_ray_address,
              help="Embed on a Ray cluster: alone, Ray's default (RAY_ADDRESS, the cluster "
                   "started on this machine, else a new local one); or 'auto', "
                   "HOST:PORT, ray://HOST:PORT.  Needs pip install \"gguf-embed[ray]\".")
@click.option("--ray-actors", type=click.IntRange(min=1), default=None, metavar="N",
              help="Ray actors to start [default: as many as the cluster has GPUs, else one "
                   "per --ray-cpus CPUs].")
@click.option("--ray-cpus", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="N", help="CPU slots (llama.cpp threads) per Ray actor without a GPU.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@remote_options
def index(paths: tuple[Path, ...], db: Path | None, model: str | None, offline: bool,
          hf_endpoint: str | None, cache_dir: str | None, include: tuple[str, ...],
          exclude: tuple[str, ...], no_ignore: bool, follow_symlinks: bool, reindex: bool,
          dimensions: int | None,
          chunk_tokens: int | None, chunk_overlap: int | None, max_file_size: float,
          progress: bool | None, prune_missing: bool, ray_address: str | None,
          ray_actors: int | None, ray_cpus: int, as_json: bool) -> None:
    """Index the files under PATHS: new and changed files are embedded, deleted ones removed.

    A PATH that does not exist or cannot be read is an error (exit 1) and nothing changes,
    unless --prune-missing.  One writer at a time: a second run on the same index waits for
    the first to finish (and says so on stderr).

    With --ray, this process walks, chunks and writes; Ray actors embed (see
    docs/scale-out.md).
    """
    db = db or default_db()
    if chunk_tokens is not None and chunk_overlap is not None and chunk_overlap >= chunk_tokens:
        raise click.BadParameter(f"{chunk_overlap} is not less than --chunk-tokens "
                                 f"{chunk_tokens}", param_hint="'--chunk-overlap'")
    if not prune_missing:
        check_roots(list(paths))  # before anything is loaded or created
    if ray_address is not None and remote_url():
        raise click.UsageError("--ray and --embed-url: give one (both say where to embed)")
    remote = remote_engine(forbid=("model",))  # a server that is down fails here, first
    if remote is None and not (reindex and model):  # --reindex alone: the index's own model
        model = Index.model_for(db, model)
    executor = None
    if ray_address is not None:  # the model is loaded by the actors; here its tokenizer
        from ..ray_executor import RayExecutor, import_ray

        import_ray()  # not installed: say so before loading anything
        executor = RayExecutor(ray_address or None, actors=ray_actors, cpus_per_actor=ray_cpus,
                               offline=offline)
    engine = remote or load_engine(model, offline, hf_endpoint, cache_dir,
                                   **({"vocab_only": True} if executor else {}))
    check_dimensions(engine, dimensions)
    chunking = _chunking(engine, chunk_tokens, chunk_overlap)
    show = (stderr_is_terminal() if progress is None else progress) and sys.stderr is not None
    bar = _ProgressLine(executor) if show else None
    cancel = threading.Event()
    try:
        # Ray prints its cluster's errors (a dead actor, ...) on stdout: stderr here, so that
        # stdout carries the summary only
        quiet = contextlib.redirect_stdout(sys.stderr) if executor else contextlib.nullcontext()
        with _cancel_on_ctrl_c(cancel), quiet, executor or contextlib.nullcontext(), Index(
                db, engine, dimensions=dimensions, chunking=chunking, reindex=reindex,
                model_ref=_model_ref(model, engine), on_wait=_tell_waiting(db)) as idx:
            max_bytes = int(max_file_size * 1e6)
            say = None if executor else functools.partial(_say_if_slow, idx, engine, max_bytes)
            summary = idx.add(list(paths), include=include, exclude=exclude,
                              use_ignore_files=not no_ignore, max_file_bytes=max_bytes,
                              progress=bar, prune_missing=prune_missing, cancel=cancel,
                              executor=executor, follow_symlinks=follow_symlinks,
                              on_found=say, on_stage=bar.stage if bar else None)
    except KeyboardInterrupt:  # a second Ctrl-C: the batch in flight is rolled back
        if bar:
            bar.close()
        click.echo("interrupted: files committed so far are kept; run the same command "
                   "again to continue", err=True)
        sys.exit(130)
    if bar:
        bar.close()
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        _print_summary(summary)
    if summary.cancelled:
        done = summary.added + summary.updated
        click.echo(f"interrupted: {done} files indexed and kept; run the same command again "
                   f"to continue", err=True)
        sys.exit(130)


def _chunking(engine: Any, tokens: int | None, overlap: int | None) -> ChunkSettings | None:
    """The chunk settings asked for, checked against the model's context (a usage error)."""
    if tokens is None and overlap is None:
        return None
    if tokens is not None and tokens > engine.max_tokens:
        raise click.BadParameter(f"{tokens} is over the model's context ({engine.max_tokens} "
                                 f"tokens)", param_hint="'--chunk-tokens'")
    base = ChunkSettings.for_context(engine.max_tokens)
    size = tokens or base.max_tokens
    if overlap is None:
        overlap = min(base.overlap, size // 2)
    try:
        return ChunkSettings(size, overlap)
    except InputError as exc:
        raise click.BadParameter(str(exc), param_hint="'--chunk-overlap'") from exc


def _say_if_slow(idx: Index, engine: Any, max_bytes: int, found: list[Path]) -> None:
    """On a CPU, say before embedding the ``found`` files when the run will take more than a
    few minutes, and name a faster model (gguf_embed.estimate computes; this prints)."""
    from ..estimate import estimate_index

    if getattr(engine, "n_gpu_layers", 0) or not hasattr(engine, "metadata"):
        return  # a GPU, or an engine that is no local GGUF (nothing to estimate from)
    chunk = idx.chunk_settings
    est = estimate_index(engine, found, idx.store.documents(), max_file_bytes=max_bytes,
                         overlap_factor=chunk.max_tokens / max(1, chunk.max_tokens
                                                               - chunk.overlap))
    if not est.slow:
        return
    name = engine.spec.name
    line = (f"note: embedding ~{est.tokens:,} tokens ({est.files} files) with {name} on this "
            f"CPU (no GPU) will take about {_minutes(est.seconds)}: it does "
            f"{est.flops_per_token / 1e9:.1f} GFLOP per token at a measured "
            f"{est.rate:,.0f} tokens/s")
    if est.faster and est.faster_seconds is not None:
        line += (f"; `--model {est.faster}` would take about {_minutes(est.faster_seconds)} "
                 f"(--reindex if this index already holds {name})")
    click.echo(terminal_text(line), err=True)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


@contextlib.contextmanager
def _cancel_on_ctrl_c(cancel: threading.Event) -> Iterator[None]:
    """The first Ctrl-C sets ``cancel`` (the run stops after the batch in flight); a second
    one raises KeyboardInterrupt at once.  A SIGINT that is not Python's to handle (ignored,
    as a script's background job ``index ... &`` inherits it; SIG_DFL) is left as it is."""
    if threading.current_thread() is not threading.main_thread() \
            or not callable(signal.getsignal(signal.SIGINT)):
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


def _tell_waiting(db: Path) -> Any:
    def tell(pid: int | None) -> None:
        who = f"PID {pid}" if pid else "another process"
        click.echo(terminal_text(f"waiting: index {db} is being written by {who}; this run "
                                 f"starts when it finishes"), err=True)
    return tell


def _model_ref(model: str | None, engine: Any) -> str:
    if model and (model.endswith(".gguf") and os.path.exists(model)):
        return os.path.abspath(model)
    return model or engine.spec.name


class _ProgressLine:
    """A tqdm progress bar on stderr: files done, chunks, tokens/s and the time left (after
    one line on the Ray actors, with --ray)."""

    def __init__(self, executor: Any = None) -> None:
        self.bar: Any = None
        self.executor = executor

    def __call__(self, p: Progress) -> None:
        if self.bar is None:
            from tqdm import tqdm

            if self.executor is not None:
                click.echo(f"embedding on {self.executor.describe()}", err=True)

            # smoothing=0: the ETA from the average rate, as Progress.eta computes it
            self.bar = tqdm(total=p.files_total, unit="file", file=sys.stderr, smoothing=0,
                            mininterval=0.2, dynamic_ncols=True)
        self.bar.total = p.files_total
        self.bar.set_postfix_str(f"{p.chunks} chunks, {p.tokens_per_second:,.0f} tok/s",
                                 refresh=False)
        self.bar.update(p.files_done - self.bar.n)

    def stage(self, stage: Stage) -> None:
        """A long step after the files (the bar stays, finished, above its line)."""
        self.close()
        click.echo(stage_line(stage), err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def stage_line(stage: Stage) -> str:
    """One line on stderr before a long step after the writes (index, merge): at a million
    chunks building INDEX.keywords takes ~35 s, which would look like a hang."""
    doing = "building" if stage.how == "build" else "updating"
    what = "vector" if stage.name == "bits" else "keyword"
    return f"{doing} the {what} search cache for {stage.chunks:,} chunks…"


def _print_summary(summary: IndexSummary) -> None:
    s = summary
    rate = s.tokens_embedded / s.seconds if s.seconds else 0.0
    click.echo(f"added {s.added}, updated {s.updated}, moved {s.moved}, removed {s.removed}, "
               f"unchanged {s.unchanged}, skipped {len(s.skipped)}, failed {len(s.failed)}")
    click.echo(f"{s.chunks} chunks written ({s.chunks_reused} reused), "
               f"{s.tokens_embedded:,} tokens embedded in {s.seconds:.1f} s ({rate:,.0f} tok/s)")
    for label, items in (("skipped", s.skipped), ("failed", s.failed)):
        for path, reason in items:
            click.echo(f"  {label}: {_display(path)}: {terminal_text(reason)}")
    if s.symlinks_skipped:
        click.echo(symlinks_line(s.symlinks_skipped))


def symlinks_line(count: int) -> str:
    """One line for the symlinks a run did not follow (never one line per link)."""
    return (f"not followed: {count} symlink{'s' if count != 1 else ''} leading outside the "
            f"indexed folders (--follow-symlinks indexes {'their' if count != 1 else 'its'} "
            f"target{'s' if count != 1 else ''})")


@cli.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(db: Path | None, as_json: bool) -> None:
    """What the index holds: model, dimensions, documents, chunks, size, last run."""
    db = db or default_db()
    with Index(db, readonly=True) as idx:
        info = idx.status()
    if info.get("read_only_reason"):
        click.echo(terminal_text(f"note: {info['read_only_reason']}"), err=True)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    last = info["last_run"]
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["started_at"])) if last \
        else "never"
    click.echo(terminal_text(f"index:     {info['path']}"))
    click.echo(terminal_text(f"model:     {info['model']} ({info['model_file']})"))
    click.echo(f"dims:      {info['dims']}  pooling: {info['pooling']}  "
               f"chunks of {info['chunking']['max_tokens']} tokens" if info["chunking"] else
               f"dims:      {info['dims']}")
    click.echo(f"documents: {info['documents']}")
    click.echo(f"chunks:    {info['chunks']} ({info['tokens']:,} tokens)")
    click.echo(f"size:      {info['size_bytes'] / 1e6:.1f} MB")
    click.echo(f"last run:  {when}")
