"""``gguf-embed serve``."""

from __future__ import annotations

from pathlib import Path

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
@click.option("--batch-window", type=click.FloatRange(0, 1000), default=4.0, show_default=True,
              help="Milliseconds to gather concurrent requests into one decode (0: off).")
@click.option("--unload-after", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS", help="Free the model after this many idle seconds; the next "
              "request loads it again [default: keep it loaded].")
def serve(model: str | None, offline: bool, hf_endpoint: str | None, cache_dir: str | None,
          db: Path | None, host: str, port: int, api_key: str | None,
          batch_window: float, unload_after: float | None) -> None:
    """Serve OpenAI-compatible embeddings (and search over --db) over HTTP."""
    try:
        from ..server import ServerConfig
        from ..server import serve as run
    except ImportError as exc:  # starlette/uvicorn are an extra
        raise click.ClickException(
            "the server needs its extra: pip install 'gguf-embed[serve]'") from exc
    if db is not None and not model:
        model = recorded_model(db)
    engine = load_engine(model, offline, hf_endpoint, cache_dir, unload_after=unload_after)
    config = ServerConfig(model_name=model or engine.spec.name, host=host, port=port,
                          api_key=api_key, index_path=str(db) if db else None,
                          batch_window=batch_window / 1000)
    click.echo(f"serving {config.model_name} on http://{host}:{port}/v1 "
               f"({engine.dims} dims)", err=True)
    run(engine, config)
