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
from ._db import db_option


@cli.command()
@model_options
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (loopback by default; any other address needs --api-key, "
                   "or --insecure-no-auth).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", envvar="GGUF_EMBED_API_KEY", default=None,
              help="Require 'Authorization: Bearer KEY' [env: GGUF_EMBED_API_KEY].")
@click.option("--insecure-no-auth", is_flag=True,
              help="Serve a non-loopback --host without an API key (anyone who can reach it "
                   "may embed and search the index).")
@click.option("--watch", "watch_paths", multiple=True, metavar="PATH",
              type=click.Path(exists=True, path_type=Path),
              help="Keep the --db index live for PATH while serving (repeatable).")
@click.option("--follow-symlinks", is_flag=True,
              help="With --watch: also index what symlinks inside PATH lead to outside it.")
@click.option("--batch-window", type=FiniteFloat(0, 1000), default=4.0, show_default=True,
              help="Milliseconds to gather concurrent requests into one decode (0: off).")
@click.option("--reranker", envvar="GGUF_EMBED_RERANKER", default=None, metavar="MODEL",
              help="Also serve this reranker: POST /v1/rerank, and /v1/search reranks with it "
                   "[env: GGUF_EMBED_RERANKER].")
@click.option("--served-model-name", "served_names", multiple=True, metavar="NAME",
              help="Another name for the embedding model, listed in /v1/models (repeatable).")
@click.option("--served-reranker-name", "reranker_names", multiple=True, metavar="NAME",
              help="Another name for the reranker, listed in /v1/models (repeatable).")
@click.option("--strict-model-names", is_flag=True,
              help="Answer 404 to a model name not served (default: any name is answered by "
                   "the model served, as llama-server does).")
@click.option("--token-ids", type=click.Choice(["refuse", "model", "cl100k"]),
              default="refuse", show_default=True,
              help="Token-id inputs: refuse them; read them as OpenAI's cl100k ids (decoded "
                   "exactly to text, as LangChain sends by default; needs the cl100k extra); "
                   "or as the served model's own ids.")
@click.option("--truncate", is_flag=True,
              help="Cut inputs longer than the context (the response marks them) unless a "
                   'request says "truncate": false; default: a 400 naming the input.')
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              callback=lambda ctx, param, value: _origins(value),
              help="Allow browser calls from ORIGIN, e.g. http://localhost:3000 (repeatable; "
                   "CORS headers and preflights only for these).")
@unload_option
def serve(model: str | None, offline: bool, hf_endpoint: str | None, cache_dir: str | None,
          db: Path | None, host: str, port: int, api_key: str | None,
          batch_window: float, reranker: str | None, unload_after: float | None,
          watch_paths: tuple[Path, ...], follow_symlinks: bool, insecure_no_auth: bool,
          served_names: tuple[str, ...], reranker_names: tuple[str, ...],
          strict_model_names: bool, token_ids: str, truncate: bool,
          cors_origins: tuple[str, ...]) -> None:
    """Serve OpenAI-compatible embeddings (and search over --db) over HTTP.

    Loopback only by default; a --host other machines can reach needs --api-key (or
    --insecure-no-auth)."""
    check_exposure(host, api_key, insecure_no_auth)
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
    if token_ids == "cl100k":
        from ..token_ids import cl100k

        cl100k()  # before the model loads: a missing package is one error line
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
                              if scorer is not None else None,
                              served_names=served_names, reranker_served_names=reranker_names,
                              strict_model_names=strict_model_names, token_ids=token_ids,
                              truncate=truncate,
                              cors_origins=cors_origins)
        shown = f"[{host}]" if ":" in host else host
        also = f", reranker {config.reranker_name}" if scorer is not None else ""
        line = terminal_text(f"serving {config.model_name} on "
                             f"http://{shown}:{config.port}/v1 ({engine.dims} dims{also})")
        watcher = _start_watch(db, engine, watch_paths, model,
                               follow_symlinks) if watch_paths else None
        try:
            # announced once uvicorn is up: a client may connect at once (the socket
            # listens since bind) and a Ctrl-C after the line is a graceful shutdown
            run(engine, config, sock=sock, reranker=scorer,
                ready=lambda: click.echo(line, err=True))
        finally:
            if watcher is not None:
                watcher.stop()


def check_exposure(host: str, api_key: str | None, insecure_no_auth: bool) -> None:
    """Refuse (usage error, exit 2) an empty key or a non-loopback bind without a key, before
    anything loads; warn once when the user chose to serve one without a key."""
    from ..http_guard import exposure_problem, is_loopback

    problem = exposure_problem(host, api_key, insecure_no_auth)
    if problem:
        raise click.UsageError(problem)
    if not api_key and not is_loopback(host):
        click.echo(terminal_text(f"warning: serving on {host or 'all interfaces'} without an "
                                 f"API key (--insecure-no-auth): anyone who can reach it may "
                                 f"use it"), err=True)


def _start_watch(db: Path | None, engine: Any, paths: tuple[Path, ...],
                 model: str | None, follow_symlinks: bool = False) -> Any:
    from ._index import _model_ref
    from ._watch import start_watch

    if db is None:
        raise click.UsageError("--watch needs --db FILE (the index to keep live)")
    return start_watch(db, engine, paths, _model_ref(model, engine), follow_symlinks)


def _served_name(ref: str | None, spec_name: str) -> str:
    """A model given as a file is served under its name, never its full path."""
    if not ref or Path(ref).suffix.lower() == ".gguf" or Path(ref).is_file():
        return spec_name
    return ref


def _origins(values: tuple[str, ...]) -> tuple[str, ...]:
    """Origins as browsers send them (``scheme://host[:port]``, no path), or ``*``."""
    from urllib.parse import urlsplit

    out = []
    for value in values:
        origin = value.rstrip("/")
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.hostname
                              or parts.path or parts.query):
            raise click.BadParameter(f"{value!r} is not an origin such as "
                                     f"http://localhost:3000", param_hint="--cors-origin")
        out.append(origin)
    return tuple(out)
