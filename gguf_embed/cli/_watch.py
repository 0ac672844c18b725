"""``gguf-embed watch`` and ``gguf-embed mcp``."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..index import Index
from ..watch import WatchEvent
from ._base import (
    check_roles,
    cli,
    load_engine,
    load_reranker,
    model_options,
    terminal_text,
    unload_option,
)
from ._index import (
    _display,
    _model_ref,
    _tell_waiting,
    db_option,
    default_db,
    max_file_size_option,
    symlinks_line,
    walk_options,
)
from ._remote import remote_engine, remote_options
from ._serve import check_exposure


@cli.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@db_option
@model_options
@walk_options
@max_file_size_option
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per applied change on stdout (JSON Lines).")
@unload_option
@remote_options
def watch(paths: tuple[Path, ...], db: Path | None, model: str | None, offline: bool,
          hf_endpoint: str | None, cache_dir: str | None, include: tuple[str, ...],
          exclude: tuple[str, ...], no_ignore: bool, follow_symlinks: bool,
          max_file_size: float, as_json: bool, unload_after: float | None) -> None:
    """Index PATHS, then keep the index up to date as files change, until Ctrl-C.

    Catches up first (like `index`), then applies created, edited, deleted and moved files in
    debounced batches, one transaction each. Ctrl-C rolls back a batch in progress; the next
    run (or `index`) picks it up, as after a crash.
    """
    db = db or default_db()
    engine = remote_engine(forbid=("model",))
    if engine is None:
        model = Index.model_for(db, model)
        engine = load_engine(model, offline, hf_endpoint, cache_dir, unload_after=unload_after)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # not an inherited SIG_IGN
        signal.signal(signal.SIGTERM, _interrupt)  # (or an application's handler)

    def report(event: WatchEvent) -> None:
        if as_json:
            click.echo(json.dumps(event_dict(event)))
            if sys.stdout is not None:  # >&-: click.echo wrote nothing
                sys.stdout.flush()
        click.echo(event_line(event), err=True)

    try:  # from the open on: a SIGTERM while it waits for the write lock is 143 too
        with Index(db, engine, model_ref=_model_ref(model, engine),
                   on_wait=_tell_waiting(db)) as index:
            click.echo(f"watching {', '.join(_display(str(p)) for p in paths)} → {db} "
                       f"(Ctrl-C to stop)", err=True)
            index.watch(list(paths), None, report, include=include, exclude=exclude,
                        use_ignore_files=not no_ignore, follow_symlinks=follow_symlinks,
                        max_file_bytes=int(max_file_size * 1e6))
    except KeyboardInterrupt:
        click.echo("stopped (a batch in progress was rolled back; the next run picks it "
                   "up)", err=True)
        sys.exit(128 + _stopped_by[0])  # 130 for Ctrl-C, 143 for SIGTERM


_stopped_by = [int(signal.SIGINT)]


def _interrupt(signum: int, frame: Any) -> None:
    _stopped_by[0] = signum
    raise KeyboardInterrupt


def event_dict(event: WatchEvent) -> dict[str, Any]:
    return {"kind": event.kind, "at": round(event.at, 3), "seconds": round(event.seconds, 3),
            "paths": event.paths, "error": event.error, "note": event.note,
            "summary": event.summary.to_dict() if event.summary else None}


def event_line(event: WatchEvent) -> str:
    clock = time.strftime("%H:%M:%S", time.localtime(event.at))
    if event.kind in ("paused", "resumed"):
        return terminal_text(f"{clock} {event.kind}: {event.note}" if event.kind == "paused"
                             else f"{clock} resumed {', '.join(event.paths)}: {event.note}")
    if event.error:
        return terminal_text(f"{clock} could not apply {len(event.paths)} changes: "
                             f"{event.error}")
    s = event.summary
    assert s is not None
    head = "caught up: " if event.kind == "catch-up" else ""
    line = (f"{clock} {head}added {s.added}, updated {s.updated}, moved {s.moved}, "
            f"removed {s.removed}, unchanged {s.unchanged} ({event.seconds:.2f} s)")
    for label, items in (("skipped", s.skipped), ("failed", s.failed)):
        for path, reason in items[:20]:
            line += f"\n  {label}: {_display(path)}: {reason}"
    if s.symlinks_skipped:
        line += f"\n  {symlinks_line(s.symlinks_skipped)}"
    return line


@cli.command()
@db_option
@model_options
@click.option("--reranker", default=None, metavar="MODEL",
              help="A reranking model for search(rerank=true).")
@click.option("--watch", "watch_paths", multiple=True, metavar="PATH",
              type=click.Path(exists=True, path_type=Path),
              help="Keep the index live for PATH while serving (repeatable).")
@click.option("--follow-symlinks", is_flag=True,
              help="With --watch: also index what symlinks inside PATH lead to outside it.")
@click.option("--http", is_flag=True,
              help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="With --http: the address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="With --http: the port.")
@click.option("--api-key", envvar="GGUF_EMBED_API_KEY", default=None,
              help="With --http: require 'Authorization: Bearer KEY' [env: GGUF_EMBED_API_KEY].")
@click.option("--insecure-no-auth", is_flag=True,
              help="With --http: serve a non-loopback --host without an API key.")
@unload_option
@remote_options
def mcp(db: Path | None, model: str | None, offline: bool, hf_endpoint: str | None,
        cache_dir: str | None, reranker: str | None, watch_paths: tuple[Path, ...],
        follow_symlinks: bool, http: bool, host: str, port: int, api_key: str | None,
        insecure_no_auth: bool, unload_after: float | None) -> None:
    """Serve the index to AI assistants over MCP (stdio by default): search, get, status.

    The model stays loaded between calls. With --watch, files changing under PATH are
    re-indexed while the server runs.
    """
    try:
        from ..mcp_server import Service, run
    except ImportError as exc:
        raise click.ClickException(
            "the MCP server needs its extra: pip install 'gguf-embed[mcp]'") from exc
    if http:
        check_exposure(host, api_key, insecure_no_auth)
    db = db or default_db()
    if not watch_paths and not db.exists():
        raise click.ClickException(terminal_text(
            f"no index at {db}; build one first with 'gguf-embed index PATH' (or pass --db "
            f"FILE, or --watch PATH)"))
    engine = remote_engine(forbid=("model",))
    if engine is None:
        # an index that is there is opened once now: a FIFO, a foreign or newer file fails here
        model = Index.model_for(db, model, must_exist=db.exists())
    check_roles(model, reranker, flag="--reranker")
    engine = engine or load_engine(model, offline, hf_endpoint, cache_dir,
                                   unload_after=unload_after)
    scorer = load_reranker(reranker, offline, hf_endpoint, cache_dir) if reranker else None
    ref = _model_ref(model, engine)
    sock = None
    if http:  # bound first: a taken port fails here, and port 0 is announced as the real one
        from ..server import bind

        try:
            sock = bind(host, port)
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        port = sock.getsockname()[1]
    watcher = start_watch(db, engine, watch_paths, ref,
                          follow_symlinks) if watch_paths else None
    service = Service(engine, db, model_name=ref, reranker=scorer, watcher=watcher)
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{shown}:{port}/mcp" if http else "stdio"
    def ready() -> None:  # over HTTP: once the server is up (a Ctrl-C then shuts it down)
        click.echo(terminal_text(f"gguf-embed MCP server on {where} ({db}, {ref})"), err=True)

    try:
        run(service, http=http, host=host, port=port, api_key=api_key, sock=sock, ready=ready)
    finally:
        if watcher is not None:
            watcher.stop()
        if sock is not None:
            sock.close()


def start_watch(db: Path, engine: Any, paths: tuple[Path, ...], ref: str,
                follow_symlinks: bool = False) -> Any:
    """A background watcher for ``serve --watch`` and ``mcp --watch``.  A wrong model fails
    here, not in the thread; if another process writes the index, say who, and serve anyway
    (the watcher starts when the index is free)."""
    from ..errors import IndexBusy
    from ..watch import Background

    try:
        Index(db, engine, model_ref=ref, wait=False).close()
    except IndexBusy as exc:
        who = f"PID {exc.pid}" if exc.pid else "another process"
        click.echo(terminal_text(f"waiting: index {db} is being written by {who}; watching "
                                 f"starts when it finishes (searching works meanwhile)"),
                   err=True)
    return Background(db, engine, list(paths), model_ref=ref,
                      follow_symlinks=follow_symlinks).start()
