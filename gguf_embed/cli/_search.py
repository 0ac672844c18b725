"""``gguf-embed search``."""

from __future__ import annotations

import contextlib
import json
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .. import vector_cache
from ..errors import GgufEmbedError, NonFiniteVectors, QueryTruncated
from ..index import Index
from ..models import parse_ref
from ..search import MODES, SearchResult, keyword_hits, pool_size
from ..store import Store
from ._base import (
    check_argument,
    check_roles,
    cli,
    load_engine,
    load_reranker,
    model_options,
    terminal_text,
)
from ._db import db_option, default_db, display
from ._exit import quickly
from ._remote import remote_engine, remote_options, remote_url
from ._streams import need_stdout, stdin_lines


@cli.command()
@click.argument("query", required=False)
@db_option
@model_options
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many results.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
@click.option("--path", "path_glob", default=None, metavar="GLOB",
              help="Only documents whose path matches (a folder, file or glob).")
@click.option("--chunks", is_flag=True,
              help="One row per matching chunk, not per file (a file may appear several times).")
@click.option("--rerank", "rerank", is_flag=False, flag_value="", default=None,
              metavar="[MODEL]", envvar="GGUF_EMBED_RERANK",
              help="Rescore the top candidates with a reranker (a catalog name, "
                   "owner/repo:file.gguf or .gguf path; alone: bge-reranker-base). Off by "
                   "default: it adds seconds on a CPU (see README) [env: GGUF_EMBED_RERANK].")
@click.option("--rerank-candidates", type=click.IntRange(1, 1000), default=30,
              show_default=True, help="How many fused candidates the reranker scores.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@remote_options
def search(query: str | None, db: Path | None, model: str | None, offline: bool,
           hf_endpoint: str | None, cache_dir: str | None, k: int, mode: str,
           path_glob: str | None, chunks: bool, rerank: str | None, rerank_candidates: int,
           as_json: bool) -> None:
    """Search the index for QUERY ('-' reads queries from stdin, one per line, JSON Lines out:
    one array per line, in order, [] for a blank line).

    Each result is one file: the lines and snippet of its best chunk, and the file's score."""
    quickly()  # nothing written: the process may end without the interpreter's teardown
    need_stdout()
    query, rerank = _query_after_rerank(query, rerank)
    group = "chunk" if chunks else "file"
    db = db or default_db()
    check_argument(query, "the query")
    if path_glob is not None:
        check_argument(path_glob, "--path")
    queries = stdin_lines() if query == "-" else [query]
    if remote_url():  # a missing index fails here, first (its model is the server's)
        Index.model_for(db, "remote", must_exist=True)
        model = None
    else:
        model = Index.model_for(db, model, must_exist=True)
    check_roles(model, rerank or None)
    if mode != "keyword":
        _ready_meanwhile(db, query if query != "-" and rerank is None and not path_glob
                         and mode == "hybrid" else None, pool_size(k, mode, group))
    engine = None if mode == "keyword" else (
        remote_engine(forbid=("model",)) or load_engine(model, offline, hf_endpoint, cache_dir))
    reranker = None if rerank is None else load_reranker(rerank or None, offline,
                                                         hf_endpoint, cache_dir)
    options = None
    if reranker is not None:
        from ..reranker import RerankOptions

        options = RerankOptions(candidates=rerank_candidates)
    report = None
    with Index(db, engine, readonly=True, model_ref=model) as idx, _warnings_to_stderr():
        if query == "-":
            asked = [q for q in queries if q.strip()]
            if reranker is not None:
                answers = iter([idx.search(q, k=k, mode=mode, path=path_glob, group=group,
                                           rerank=reranker, rerank_options=options)
                                for q in asked])
            else:
                answers = iter(idx.search_many(asked, k=k, mode=mode, path=path_glob,
                                               group=group))
            for q in queries:
                results = next(answers) if q.strip() else []
                click.echo(json.dumps([_row(r) for r in results]))
            return
        results = idx.search(query, k=k, mode=mode, path=path_glob, group=group,
                             rerank=reranker, rerank_options=options)
        report = idx.last_rerank
    if report and report["truncated"]:
        click.echo(f"note: {report['truncated']} of {report['candidates']} reranked passages "
                   f"were cut to the reranker's context ({report['context']} tokens)", err=True)
    if as_json:
        click.echo(json.dumps([_row(r) for r in results], indent=2))
        return
    for r in results:
        pages = ""
        if r.start_page is not None:
            pages = f" (p. {r.start_page}" + (f"-{r.end_page}" if r.end_page != r.start_page
                                              else "") + ")"
        click.echo(f"{display(r.path)}:{r.start_line}-{r.end_line}{pages}  {r.score:.4f}")
        click.echo(f"    {terminal_text(r.snippet)}")


def _ready_meanwhile(db: Path, hybrid_query: str | None, pool: int) -> None:
    """In a thread, while the model loads and embeds the query (llama.cpp lets go of the
    GIL): import what the vector search will scan with (faiss, for a large index) and, for
    a hybrid search (``hybrid_query``), load ``INDEX.bits`` and rank the keyword half, which
    the search then finds ready (search.keyword_hits keeps it for this index state).
    Joined when the command ends; never raises (the search itself says what is wrong)."""
    def work() -> None:
        vector_cache.prepare(db)
        if hybrid_query is None:
            return
        with contextlib.suppress(Exception):
            store = Store.open(db, readonly=True)
            try:
                with store.conn:
                    vector_cache.current(store)
                keyword_hits(store, hybrid_query, pool, ahead=True)
            finally:
                store.close()

    thread = threading.Thread(target=work, name="gguf-embed search meanwhile")
    thread.start()
    click.get_current_context().call_on_close(thread.join)


def _query_after_rerank(query: str | None, rerank: str | None) -> tuple[str, str | None]:
    """``search --rerank "question"``: click hands the question to ``--rerank`` as its MODEL.
    With no QUERY left and a value that names no model, it is the query, reranked by the
    default reranker."""
    if query is not None:
        return query, rerank
    if rerank and not _names_a_model(rerank):
        return rerank, ""
    raise click.UsageError("Missing argument 'QUERY'.")


def _names_a_model(value: str) -> bool:
    try:
        return not isinstance(parse_ref(value), Path) or value.lower().endswith(".gguf") \
            or Path(value).expanduser().exists()
    except GgufEmbedError:
        return False


def _row(result: SearchResult) -> dict[str, Any]:
    return result.to_dict()


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """The library's warnings (a query cut to the context) as one ``warning:`` line each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QueryTruncated)
        warnings.simplefilter("always", NonFiniteVectors)
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, (QueryTruncated, NonFiniteVectors)):
                    click.echo(terminal_text(f"warning: {w.message}"), err=True)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
