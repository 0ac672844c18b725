"""``gguf-embed serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._base import cli, load_engine, model_options
from ._index import db_option, recorded_model


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
@click.option("--batch-window", type=click.FloatRange(0, 1000), default=4.0, show_default=True,
              help="Milliseconds to gather concurrent requests into one decode (0: off).")
def serve(model: str | None, offline: bool, hf_endpoint: str | None, cache_dir: str | None,
          db: Path | None, host: str, port: int, api_key: str | None,
          batch_window: float, watch_paths: tuple[Path, ...]) -> None:
    """Serve OpenAI-compatible embeddings (and search over --db) over HTTP."""
    try:
        from ..server import ServerConfig
        from ..server import serve as run
    except ImportError as exc:  # starlette/uvicorn are an extra
        raise click.ClickException(
            "the server needs its extra: pip install 'gguf-embed[serve]'") from exc
    if db is not None and not model:
        model = recorded_model(db)
    engine = load_engine(model, offline, hf_endpoint, cache_dir)
    config = ServerConfig(model_name=model or engine.spec.name, host=host, port=port,
                          api_key=api_key, index_path=str(db) if db else None,
                          batch_window=batch_window / 1000)
    click.echo(f"serving {config.model_name} on http://{host}:{port}/v1 "
               f"({engine.dims} dims)", err=True)
    watcher = _start_watch(db, engine, watch_paths, model) if watch_paths else None
    try:
        run(engine, config)
    finally:
        if watcher is not None:
            watcher.stop()


def _start_watch(db: Path | None, engine: Any, paths: tuple[Path, ...],
                 model: str | None) -> Any:
    from ..index import Index
    from ..watch import Background
    from ._index import _model_ref

    if db is None:
        raise click.UsageError("--watch needs --db FILE (the index to keep live)")
    ref = _model_ref(model, engine)
    Index(db, engine, model_ref=ref).close()  # a wrong model fails here, not in the thread
    return Background(db, engine, list(paths), model_ref=ref).start()
