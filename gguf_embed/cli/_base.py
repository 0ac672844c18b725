"""The ``gguf-embed`` group, shared options, and the embed and models commands.

Paths, environment variables and terminal concerns are resolved here and nowhere else.
stdout carries results only; progress, logs and errors go to stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from ..errors import GgufEmbedError
from ..models import CATALOG, DEFAULT_MODEL, ResolvedModel, resolve_model


class _Group(click.Group):
    """Maps the library's exception hierarchy to ``Error: ...`` with exit code 1, once."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GgufEmbedError as exc:
            raise click.ClickException(str(exc)) from exc


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--model, --offline and the hub settings, shared by every command that loads a model."""
    func = hub_options(func)
    func = click.option("--offline", is_flag=True, envvar="HF_HUB_OFFLINE",
                        help="Never download; use the Hugging Face cache only "
                             "[env: HF_HUB_OFFLINE].")(func)
    func = click.option("-m", "--model", envvar="GGUF_EMBED_MODEL", default=None,
                        help="A catalog name, owner/repo:file.gguf, or a .gguf path "
                             f"[env: GGUF_EMBED_MODEL; default: the index's model, else "
                             f"{DEFAULT_MODEL}].")(func)
    return func


def hub_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--hf-endpoint", envvar="HF_ENDPOINT", hidden=True, default=None)(func)
    func = click.option("--cache-dir", envvar="HF_HUB_CACHE", default=None,
                        type=click.Path(file_okay=False),
                        help="Hugging Face cache folder [env: HF_HUB_CACHE].")(func)
    return func


def resolve(model: str, *, offline: bool = False, hf_endpoint: str | None = None,
            cache_dir: str | None = None, verify: bool = False) -> ResolvedModel:
    return resolve_model(model, offline=offline, endpoint=hf_endpoint, cache_dir=cache_dir,
                         progress=sys.stderr.isatty(), verify=verify)


def load_engine(model: str | None, offline: bool, hf_endpoint: str | None,
                cache_dir: str | None, *, unload_after: float | None = None,
                **kwargs: Any) -> Any:
    """The engine for ``model``; with ``unload_after`` one that frees the model after that many
    idle seconds and loads it again on the next call."""
    from ..engine import Engine

    resolved = resolve(model or DEFAULT_MODEL, offline=offline, hf_endpoint=hf_endpoint,
                       cache_dir=cache_dir)
    if unload_after:
        from ..idle import IdleEngine

        return IdleEngine(resolved, unload_after=unload_after, **kwargs)
    return Engine(resolved, **kwargs)


@click.group(cls=_Group)
@click.version_option(package_name="gguf-embed")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's log and details on stderr.")
def cli(verbose: bool) -> None:
    """Private, offline semantic search over your files with GGUF embedding models."""
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root = logging.getLogger("gguf_embed")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)


@cli.command()
@click.argument("texts", nargs=-1)
@model_options
@click.option("-q", "--query", is_flag=True, help="Embed as search queries (adds the model's "
              "query instruction).")
@click.option("--task", default=None, help="The task for instruction-aware models' queries.")
@click.option("-d", "--dimensions", type=int, default=None,
              help="Cut vectors to this size (Matryoshka) and renormalize.")
@click.option("--truncate", is_flag=True,
              help="Cut inputs longer than the context (reported on stderr) instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of all vectors.")
def embed(texts: tuple[str, ...], model: str | None, offline: bool, hf_endpoint: str | None,
          cache_dir: str | None, query: bool, task: str | None, dimensions: int | None,
          truncate: bool, as_json: bool) -> None:
    """Embed TEXTS (or stdin, one text per line) and print the vectors in input order.

    Without --json, each vector is printed as a JSON array on its own line.
    """
    items = list(texts) if texts else _stdin_lines()
    if not items:
        raise click.UsageError("no text to embed: pass TEXT arguments or lines on stdin")
    engine = load_engine(model, offline, hf_endpoint, cache_dir)
    result = engine.encode(items, query=query, task=task, dimensions=dimensions,
                           truncate=truncate)
    for i in result.truncated:
        click.echo(f"warning: input {i + 1} was truncated to {engine.max_tokens} tokens",
                   err=True)
    rows = result.vectors.tolist()
    if as_json:
        click.echo(json.dumps(rows))
    else:
        for row in rows:
            click.echo(json.dumps(row))


def _stdin_lines() -> list[str]:
    lines = sys.stdin.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise click.UsageError(f"stdin line {number} is empty; give one text per line")
    return lines


@cli.group()
def models() -> None:
    """List, download and locate models."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@hub_options
def models_list(as_json: bool, cache_dir: str | None, hf_endpoint: str | None) -> None:
    """The catalog of known models (the default is marked with *)."""
    rows = []
    for spec in CATALOG.values():
        cached = _cached_path(spec.name, cache_dir)
        rows.append({**spec.to_dict(), "default": spec.name == DEFAULT_MODEL,
                     "cached": cached is not None, "path": str(cached) if cached else None})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        mark = "*" if row["default"] else " "
        state = "cached" if row["cached"] else ""
        click.echo(f"{mark} {row['name']:<24} {row['dims']:>5}d {row['n_ctx']:>6} ctx  "
                   f"{row['repo']}:{row['file']}  {state}".rstrip())


@models.command("pull")
@click.argument("name")
@hub_options
def models_pull(name: str, cache_dir: str | None, hf_endpoint: str | None) -> None:
    """Download NAME into the Hugging Face cache (sha256 checked) and print its path."""
    click.echo(str(resolve(name, hf_endpoint=hf_endpoint, cache_dir=cache_dir, verify=True).path))


@models.command("path")
@click.argument("name")
@hub_options
def models_path(name: str, cache_dir: str | None, hf_endpoint: str | None) -> None:
    """Print the local path of NAME if it is cached (never downloads)."""
    click.echo(str(resolve(name, offline=True, cache_dir=cache_dir).path))


def _cached_path(name: str, cache_dir: str | None) -> Any:
    try:
        return resolve_model(name, offline=True, cache_dir=cache_dir).path
    except GgufEmbedError:
        return None


