"""``--embed-url`` and its options: embed through a remote OpenAI-compatible server
(:class:`~gguf_embed.remote_engine.RemoteEngine`, docs/remote-engine.md).

The options are not passed to the commands' functions (``expose_value=False``): they are kept
on the click context, and :func:`remote_engine` makes the engine from them, so that a command
only needs ``remote_engine() or load_engine(...)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

_KEY = "gguf_embed.remote"


# the options whose empty value would silently mean their default (a local model, the public
# CAs, no key, the server's model): what to give instead
_NOT_EMPTY = {"embed_url": "the server's URL, or leave it out to use a local model",
              "embed_model": "a model name, or leave it out for the server's",
              "embed_api_key": "the key, or leave it out to send none",
              "embed_ca_cert": "a PEM file or folder, or leave it out for the usual public CAs"}


def _keep(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if param.name in _NOT_EMPTY and isinstance(value, str) and not value.strip():
        source = ctx.get_parameter_source(param.name)
        named = (f" ({param.envvar})" if source is click.core.ParameterSource.ENVIRONMENT
                 else "")
        raise click.BadParameter(f"is empty{named}: give {_NOT_EMPTY[param.name]}", ctx, param)
    ctx.meta.setdefault(_KEY, {})[param.name] = value
    return value


def _set_but_empty(name: str) -> None:
    """click reads an empty environment variable as unset: for these two that silently means
    a local model (a multi-GB default download) or the public CAs, so it is refused."""
    envvar = f"GGUF_EMBED_{name.upper()}"
    if envvar in os.environ and not os.environ[envvar].strip():
        what = _NOT_EMPTY[name].replace("leave it out", "unset it")
        raise click.UsageError(f"{envvar} is set but empty: set it to {what}")


def remote_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--embed-url, --embed-model, --embed-api-key and the tuning options."""
    options = [
        _option("--embed-url", envvar="GGUF_EMBED_EMBED_URL", metavar="URL",
                     help="Embed through this OpenAI-compatible server (gguf-embed serve, "
                          "llama-server, vLLM, Ollama, TEI) instead of a local model; see "
                          "docs/remote-engine.md [env: GGUF_EMBED_EMBED_URL]."),
        _option("--embed-model", envvar="GGUF_EMBED_EMBED_MODEL", metavar="NAME",
                     help="With --embed-url: the model name to send [env: "
                          "GGUF_EMBED_EMBED_MODEL; default: the server's]."),
        _option("--embed-api-key", envvar="GGUF_EMBED_EMBED_API_KEY", metavar="KEY",
                     help="With --embed-url: sent as 'Authorization: Bearer KEY' to that "
                          "server only [env: GGUF_EMBED_EMBED_API_KEY]."),
        _option("--embed-ca-cert", envvar="GGUF_EMBED_EMBED_CA_CERT", metavar="FILE",
                     help="With an https:// --embed-url: trust only the CA certificates in "
                          "FILE (PEM, or a folder of PEM files) for that server, e.g. a "
                          "private CA [env: GGUF_EMBED_EMBED_CA_CERT; default: the usual "
                          "public CAs]."),
        _option("--embed-batch", type=click.IntRange(1, 2048), default=64,
                     show_default=True, metavar="N",
                     help="With --embed-url: inputs per request."),
        _option("--embed-concurrency", type=click.IntRange(1, 64), default=2,
                     show_default=True, metavar="N",
                     help="With --embed-url: requests in flight at once."),
        _option("--embed-timeout", envvar="GGUF_EMBED_EMBED_TIMEOUT",
                     type=click.FloatRange(0, min_open=True), default=300.0,
                     show_default=True, metavar="SECONDS",
                     help="With --embed-url: how long to wait for the answer to one request "
                          "(a batch of --embed-batch inputs); the start-up checks wait at "
                          "most 10 s [env: GGUF_EMBED_EMBED_TIMEOUT]."),
        _option("--embed-context", type=click.IntRange(16), default=None, metavar="TOKENS",
                     help="With --embed-url: the most tokens one input may have [default: "
                          "what a gguf-embed server says, else the catalog's, else 512]."),
        _option("--query-prefix", default=None, metavar="TEXT",
                     help="With --embed-url (not a gguf-embed server): put TEXT before each "
                          "query [default: the catalog's instruction for the model, if any]."),
        _option("--document-prefix", default=None, metavar="TEXT",
                     help="With --embed-url (not a gguf-embed server): put TEXT before each "
                          "document [default: the catalog's, if any]."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _option(*decls: str, **attrs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option kept on the context (see the module docstring), not passed on."""
    return click.option(*decls, expose_value=False, callback=_keep, **attrs)


def _options(ctx: click.Context) -> dict[str, Any]:
    return dict(ctx.meta.get(_KEY) or {})


def remote_url() -> str | None:
    opts = _options(click.get_current_context())
    url = opts.get("embed_url") or None
    if url is None:
        _set_but_empty("embed_url")
    elif opts.get("embed_ca_cert") is None:
        _set_but_empty("embed_ca_cert")
    return url


def remote_engine(*, forbid: tuple[str, ...] = ()) -> Any:
    """The :class:`RemoteEngine` that ``--embed-url`` asks for, or None without it.  Options
    given on the command line that mean a local model (``forbid``, e.g. ``model``) are refused
    beside it; so are the remote options without --embed-url."""
    ctx = click.get_current_context()
    opts = _options(ctx)
    url = remote_url()
    if url is None:
        for name in ("embed_model", "embed_api_key", "query_prefix", "document_prefix",
                     "embed_context", "embed_ca_cert", "embed_timeout"):
            if opts.get(name) is not None and ctx.get_parameter_source(name) \
                    is click.core.ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name.replace('_', '-')} needs --embed-url")
        return None
    for name in forbid:
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            raise click.UsageError(f"--{name.replace('_', '-')} is for a local model; with "
                                   f"--embed-url, name the server's model with --embed-model")
    from ..remote_engine import RemoteEngine

    return RemoteEngine(url, model=opts.get("embed_model"), api_key=opts.get("embed_api_key"),
                        batch_size=opts.get("embed_batch") or 64,
                        concurrency=opts.get("embed_concurrency") or 2,
                        timeout=opts.get("embed_timeout") or 300.0,
                        context=opts.get("embed_context"),
                        query_prefix=opts.get("query_prefix"),
                        document_prefix=opts.get("document_prefix"),
                        ca_cert=opts.get("embed_ca_cert") or None)


__all__ = ["remote_engine", "remote_options", "remote_url"]
