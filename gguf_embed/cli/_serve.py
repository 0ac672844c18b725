"""``gguf-embed serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..index import Index
from ._base import (
    FiniteFloat,
    check_roles,
    cli,
    load_engine,
    load_reranker,
    model_options,
    terminal_text,
    unload_option,
)
from ._index import db_option


@cli.command()
@model_options
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback by default; anything else wants --api-key).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="GGUF_EMBED_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' [env: GGUF_EMBED_API_KEY].")
@click.option("--watch", "watch_paths", multiple=True, metavar="PATH",
              type=click.Path(exists=True, path_type=Path),
              help="Keep the --db index live for PATH while serving (repeatable).")
@click.option("--batch-window", type=FiniteFloat(0, 1000), default=4.0, show_default=True,
              help="Milliseconds to gather concurrent requests into one decode (0: off).")
@click.option("--reranker", envvar="GGUF_EMBED_RERANKER", default=None, metavar="MODEL",
              help="Also serve this reranker: POST /v1/rerank, and /v1/search reranks with it "
                   "[env: GGUF_EMBED_RERANKER].")
@unload_option
def serve(model: str | None, offline: bool, hf_endpoint: str | None, cache_dir: str | None,
          db: Path | None, host: str, port: int, api_key: str | None,
          batch_window: float, reranker: str | None, unload_after: float | None,
          watch_paths: tuple[Path, ...]) -> None:
    """Serve OpenAI-compatible embeddings (and search over --db) over HTTP."""
    try:
        import uvicorn  # noqa: F401

        from ..server import ServerConfig, bind
        from ..server import serve as run
    except ImportError as exc:  # starlette/uvicorn are an extra
        raise click.ClickException(
            "the server needs its extra: pip install 'gguf-embed[serve]'") from exc
    if db is not None:  # an index that is there is opened once now (a FIFO fails here)
        model = Index.model_for(db, model, must_exist=db.exists())
    check_roles(model, reranker, flag="--reranker")
    try:  # first, so a taken port fails before a model loads or anything is announced
        sock = bind(host, port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    with sock:
        engine = load_engine(model, offline, hf_endpoint, cache_dir,
                             unload_after=unload_after)
        scorer = load_reranker(reranker, offline, hf_endpoint, cache_dir) if reranker else None
        config = ServerConfig(model_name=_served_name(model, engine.spec.name), host=host,
                              port=sock.getsockname()[1], api_key=api_key,
                              index_path=str(db) if db else None,
                              batch_window=batch_window / 1000,
                              reranker_name=_served_name(reranker, scorer.spec.name)
                              if scorer is not None else None)
        shown = f"[{host}]" if ":" in host else host
        also = f", reranker {config.reranker_name}" if scorer is not None else ""
        click.echo(terminal_text(f"serving {config.model_name} on "
                                 f"http://{shown}:{config.port}/v1 ({engine.dims} dims{also})"),
                   err=True)
        watcher = _start_watch(db, engine, watch_paths, model) if watch_paths else None
        try:
            run(engine, config, sock=sock, reranker=scorer)
        finally:
            if watcher is not None:
                watcher.stop()


def _start_watch(db: Path | None, engine: Any, paths: tuple[Path, ...],
                 model: str | None) -> Any:
    from ._index import _model_ref
    from ._watch import start_watch

    if db is None:
        raise click.UsageError("--watch needs --db FILE (the index to keep live)")
    return start_watch(db, engine, paths, _model_ref(model, engine))


def _served_name(ref: str | None, spec_name: str) -> str:
    """A model given as a file is served under its name, never its full path."""
    if not ref or Path(ref).suffix.lower() == ".gguf" or Path(ref).is_file():
        return spec_name
    return ref
