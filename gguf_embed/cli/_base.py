"""The ``gguf-embed`` group, shared options, and the embed and models commands.

Paths, environment variables and terminal concerns are resolved here and nowhere else.
stdout carries results only; progress, logs and errors go to stderr.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from .._text import unicode_problem
from ..errors import GgufEmbedError, InputTooLong, InvalidDimensions, capped
from ..models import CATALOG, DEFAULT_MODEL, ResolvedModel, resolve_model
from ._exit import ending, quickly
from ._remote import remote_engine, remote_options
from ._streams import need_stdout, results_failed, results_not_written, stderr_is_terminal
from ._streams import stdin_lines as stdin_lines  # for the commands, as before


class _Context(click.Context):
    """The group's context: a Ctrl-C while it closes (after the command, in click's own
    code) is ``Interrupted.`` and 130, not click's blank line, "Aborted!" and exit 1."""

    def close(self) -> None:
        try:
            super().close()
        except KeyboardInterrupt:
            interrupted()


class _Group(click.Group):
    """Maps the library's exception hierarchy to ``Error: ...`` with exit code 1, and Ctrl-C
    to ``Interrupted.`` with exit code 130, once for every command.  A command's module is
    imported when the command is asked for (``LAZY``): ``gguf-embed search`` does not pay for
    the server, the watcher or llama.cpp's diagnostics."""

    context_class = _Context

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY}) if self is cli else super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if self is cli and cmd_name not in self.commands and cmd_name in LAZY:
            try:
                importlib.import_module(f"{__package__}.{LAZY[cmd_name]}")
            except KeyboardInterrupt:
                interrupted()
        return super().get_command(ctx, cmd_name)

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        try:  # the group's options and arguments: click's own handling says "Aborted!", 1
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            interrupted()

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except OSError as exc:  # writing the group's --help or --version
            if not results_failed(exc):
                raise
            results_not_written(exc)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GgufEmbedError as exc:
            raise click.ClickException(terminal_text(capped(str(exc)))) from exc
        except KeyboardInterrupt:
            interrupted()
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not _current_folder():
                raise click.ClickException(
                    "the current folder no longer exists (deleted while in use): cd to a "
                    "folder that exists, or give absolute paths") from exc
            if not results_failed(exc):  # not a write of the results: as before
                raise
            results_not_written(exc)


def _current_folder() -> bool:
    """The current folder exists (a shell may sit in one that was deleted)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        return False
    return True


# command → the module (in this package) that defines it; _base defines embed and models
LAZY = {"doctor": "_doctor", "index": "_index", "search": "_search", "status": "_index",
        "merge": "_merge", "serve": "_serve", "watch": "_watch", "mcp": "_watch"}


def interrupted() -> NoReturn:
    """Ctrl-C: one line on stderr and exit 130 (128 + SIGINT), as shells expect.  What the
    interrupt cut short may still report as the process ends (a server's coroutine never
    awaited, its event loop never closed: Python's warnings, uvloop's "deallocating an open
    event loop" on the asyncio logger) is noise after that line, and is silenced; a second
    Ctrl-C ends the process at once (``ending``)."""
    ending()
    with contextlib.suppress(Exception):
        click.echo("Interrupted.", err=True)
    import warnings

    warnings.simplefilter("ignore")
    if "logging" in sys.modules:  # only a module that logs has imported it
        sys.modules["logging"].getLogger("asyncio").disabled = True
    sys.exit(130)


class FiniteFloat(click.FloatRange):
    """A float range that also refuses nan and inf (which compare false with every bound)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


DIMENSIONS = click.IntRange(1, 65_536)  # the model's own range is checked once it is loaded


# C0 and C1 controls but tab (terminal escapes, newlines), bidi overrides, and lone surrogates
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (file names, arguments)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(text: str) -> str:
    """``text`` safe to print on a terminal: control characters (escape sequences, newlines),
    bidi overrides and undecodable bytes shown as backslash escapes.  JSON output keeps the
    exact text instead."""
    return _UNSAFE.sub(_escape, text)


def check_argument(text: str, what: str) -> str:
    """An argument that is not UTF-8 (bytes the shell passed through) is a one-line error."""
    problem = unicode_problem(text)
    if problem:
        raise click.ClickException(f"{what} is not valid UTF-8 text ({problem})")
    return text


def _not_empty(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; pass a catalog name, owner/repo:file.gguf or a "
                                 ".gguf path", ctx, param)
    return value


_THREADS = "gguf_embed.threads"  # click context meta: --threads, read by the loaders below


def _remember_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        ctx.meta[_THREADS] = value


def _threads(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` with ``n_threads`` from ``--threads`` when given (and not set already)."""
    ctx = click.get_current_context(silent=True)
    threads = ctx.meta.get(_THREADS) if ctx is not None else None
    return {"n_threads": threads, **kwargs} if threads else kwargs


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--model, --offline, --threads and the hub settings, shared by every command that loads
    a model."""
    func = hub_options(func)
    func = click.option("--threads", type=click.IntRange(1, 4096), envvar="GGUF_EMBED_THREADS",
                        default=None, metavar="N", expose_value=False,
                        callback=_remember_threads,
                        help="CPU threads llama.cpp uses for the model (and the reranker) "
                             "[env: GGUF_EMBED_THREADS; default: the physical cores].")(func)
    func = click.option("--offline", is_flag=True, envvar="HF_HUB_OFFLINE",
                        help="Never download; use the Hugging Face cache only "
                             "[env: HF_HUB_OFFLINE].")(func)
    func = click.option("-m", "--model", envvar="GGUF_EMBED_MODEL", default=None,
                        callback=_not_empty,
                        help="A catalog name, owner/repo:file.gguf, or a .gguf path "
                             f"[env: GGUF_EMBED_MODEL; default: the index's model, else "
                             f"{DEFAULT_MODEL}].")(func)
    return func


def unload_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """--unload-after, for the long-running commands (serve, watch, mcp)."""
    return click.option(
        "--unload-after", type=FiniteFloat(min=0, min_open=True, max=1e9), default=None,
        metavar="SECONDS", help="Free the model after this many idle seconds; the next "
        "request loads it again [default: keep it loaded].")(func)


def hub_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--hf-endpoint", envvar="HF_ENDPOINT", hidden=True, default=None)(func)
    func = click.option("--cache-dir", envvar="HF_HUB_CACHE", default=None,
                        type=click.Path(file_okay=False),
                        help="Hugging Face cache folder [env: HF_HUB_CACHE].")(func)
    return func


def resolve(model: str, *, offline: bool = False, hf_endpoint: str | None = None,
            cache_dir: str | None = None, verify: bool = False) -> ResolvedModel:
    return resolve_model(model, offline=offline, endpoint=hf_endpoint, cache_dir=cache_dir,
                         progress=stderr_is_terminal(), verify=verify)


def load_engine(model: str | None, offline: bool, hf_endpoint: str | None,
                cache_dir: str | None, *, unload_after: float | None = None,
                **kwargs: Any) -> Any:
    """The engine for ``model``; with ``unload_after`` one that frees the model after that many
    idle seconds and loads it again on the next call."""
    from ..engine import Engine

    resolved = resolve(model or DEFAULT_MODEL, offline=offline, hf_endpoint=hf_endpoint,
                       cache_dir=cache_dir)
    kwargs = _threads(kwargs)
    if unload_after:
        from ..idle import IdleEngine

        return IdleEngine(resolved, unload_after=unload_after, **kwargs)
    return Engine(resolved, **kwargs)


def check_dimensions(engine: Any, dimensions: int | None) -> None:
    """``--dimensions`` outside the loaded model's range: a usage error (exit 2) naming it."""
    try:
        engine.check_dimensions(dimensions)
    except InvalidDimensions as exc:
        raise click.BadParameter(str(exc), param_hint="'-d' / '--dimensions'") from exc


def check_roles(embedding: str | None, reranker: str | None,
                flag: str = "--rerank") -> None:
    """Refuse a reranker given as the embedding model or the reverse, naming both, before
    anything is loaded (catalog names and hub files; a local file is checked on loading)."""
    from ..models import DEFAULT_RERANKER, parse_ref

    def kind(ref: str | None) -> str | None:
        try:
            return getattr(parse_ref(ref), "kind", None) if ref else None
        except GgufEmbedError:
            return None

    emb, rer = kind(embedding), kind(reranker)
    if (emb == "reranker" and rer == "embedding") or (emb == "reranker" and reranker is None):
        raise click.ClickException(
            f"{embedding} is a reranker, not an embedding model"
            + (f", and {reranker} is an embedding model: swap them (--model {reranker} "
               f"{flag} {embedding})" if rer == "embedding" else
               f"; pass an embedding model to --model and {embedding} to {flag}"))
    if emb == "reranker":
        raise click.ClickException(
            f"{embedding} (--model) is a reranker, not an embedding model; {reranker} is the "
            f"reranker: pass an embedding model to --model")
    if rer == "embedding":
        other = f"; the embedding model is {embedding}" if embedding else ""
        raise click.ClickException(
            f"{reranker} ({flag}) is an embedding model, not a reranker{other}: pass a "
            f"reranker such as {DEFAULT_RERANKER} to {flag}")


def load_reranker(model: str | None, offline: bool, hf_endpoint: str | None,
                  cache_dir: str | None) -> Any:
    """The reranker ``model`` (default: the catalog's default reranker)."""
    from ..models import DEFAULT_RERANKER
    from ..reranker import Reranker

    return Reranker(resolve(model or DEFAULT_RERANKER, offline=offline,
                            hf_endpoint=hf_endpoint, cache_dir=cache_dir), **_threads({}))


@click.group(cls=_Group)
@click.version_option(package_name="gguf-embed")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's log and details on stderr.")
def cli(verbose: bool) -> None:
    """Private, offline semantic search over your files with GGUF embedding models."""
    if verbose and sys.stderr is not None:  # 2>&-: nowhere to show it
        import logging  # only here: a one-shot command without -v does not load it

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
@click.option("-d", "--dimensions", type=DIMENSIONS, default=None,
              help="Cut vectors to this size (Matryoshka) and renormalize.")
@click.option("--truncate", is_flag=True,
              help="Cut inputs longer than the context (reported on stderr) instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of all vectors.")
@remote_options
def embed(texts: tuple[str, ...], model: str | None, offline: bool, hf_endpoint: str | None,
          cache_dir: str | None, query: bool, task: str | None, dimensions: int | None,
          truncate: bool, as_json: bool) -> None:
    """Embed TEXTS (or stdin, one text per line; also '-' alone) and print the vectors in
    input order.

    Without --json, each vector is printed as a JSON array on its own line.
    """
    quickly()  # nothing written: the process may end without the interpreter's teardown
    need_stdout()
    from_stdin = _reads_stdin(texts)
    items = stdin_lines("input") if from_stdin \
        else [check_argument(t, f"input {i}") for i, t in enumerate(texts)]
    if not items:
        raise click.UsageError("no text to embed: pass TEXT arguments or lines on stdin")
    for number, text in enumerate(items):  # numbered from 0, as in the other errors
        if not text.strip():
            raise click.UsageError(f"input {number} is empty; give one non-empty text per "
                                   f"{'line' if from_stdin else 'argument'}")
    engine = remote_engine(forbid=("model",)) or load_engine(model, offline, hf_endpoint,
                                                             cache_dir)
    check_dimensions(engine, dimensions)
    try:
        result = engine.encode(items, query=query, task=task, dimensions=dimensions,
                               truncate=truncate)
    except InputTooLong as exc:  # the library's advice, in this command's words
        raise click.ClickException(
            f"input {exc.index} has {exc.n_tokens:,} tokens but the model's context holds "
            f"{exc.limit:,}: split it, or pass --truncate to cut it to fit") from exc
    for i in result.truncated:  # inputs are numbered from 0, as in errors and the server
        click.echo(f"warning: input {i} was truncated to {engine.max_tokens} tokens",
                   err=True)
    rows = result.vectors.tolist()
    if as_json:
        click.echo(json.dumps(rows))
    else:
        for row in rows:
            click.echo(json.dumps(row))


def _reads_stdin(texts: tuple[str, ...]) -> bool:
    """No TEXT, or ``-`` alone (as ``search -``): the texts are stdin's lines.  A ``-`` among
    other texts is refused rather than embedded as the text "-"."""
    if not texts or texts == ("-",):
        return True
    if "-" in texts:
        raise click.UsageError(f"input {texts.index('-')} is '-', which reads stdin: give it "
                               f"alone (embed -), or put the texts on stdin")
    return False


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
        size = f"{row['dims']:>5}d" if row["dims"] else "  rank"  # a reranker: no vectors
        click.echo(f"{mark} {row['name']:<24} {size} {row['n_ctx']:>6} ctx  "
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


