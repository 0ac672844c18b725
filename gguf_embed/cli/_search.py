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

from .. import index_paths, vector_cache
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
    if not query.strip():  # a usage error, as embed "" is (a blank line of '-' gives [])
        raise click.UsageError("the query is empty: give the text to search for, or - to read "
                               "queries from stdin")
    if path_glob is not None:
        check_argument(path_glob, "--path")
        _check_path(path_glob)
    queries = stdin_lines("query") if query == "-" else [query]
    if len(queries) == 1:  # one scan: numpy's, not faiss's ~70 ms import
        vector_cache.searching_once()
        click.get_current_context().call_on_close(lambda: vector_cache.searching_once(False))
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
    with Index(db, engine, readonly=True, model_ref=model) as idx, \
            _warnings_to_stderr() as caught:
        if query == "-":
            _search_stdin(idx, queries, caught, k=k, mode=mode, path=path_glob, group=group,
                          rerank=reranker, rerank_options=options)
            return
        results = idx.search(query, k=k, mode=mode, path=path_glob, group=group,
                             rerank=reranker, rerank_options=options)
        reports = [idx.last_rerank] if reranker is not None else []
    _note_truncated(reports)
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


def _search_stdin(idx: Index, queries: list[str], caught: list[Any], *, rerank: Any,
                  rerank_options: Any, **how: Any) -> None:
    """One JSON array per line of ``queries`` (``[]`` for a blank one).  A query cut to the
    model's context is named by its line, numbered from 0 (``query 2``), however the
    queries were batched; with a reranker, one note sums the passages cut over all queries."""
    numbers = [n for n, q in enumerate(queries) if q.strip()]
    asked = [queries[n] for n in numbers]
    reports = []
    if rerank is not None:
        answers = []
        for q in asked:
            start = len(caught)
            answers.append(idx.search(q, rerank=rerank, rerank_options=rerank_options, **how))
            reports.append(idx.last_rerank)
            for w in caught[start:]:  # searched alone: its index is 0; the batch's is its own
                if isinstance(w.message, QueryTruncated):
                    w.message.index = len(answers) - 1
    else:
        answers = idx.search_many(asked, **how)
    for w in caught:
        if isinstance(w.message, QueryTruncated):
            w.message.args = (QueryTruncated.text(f"query {numbers[w.message.index]}",
                                                  w.message.limit),)
    _note_truncated(reports, len(asked))
    found = iter(answers)
    for q in queries:
        results = next(found) if q.strip() else []
        click.echo(json.dumps([_row(r) for r in results]))


def _note_truncated(reports: list[Any], queries: int = 1) -> None:
    """The reranked passages cut to the reranker's context, summed over the queries."""
    cut = sum(r["truncated"] for r in reports if r)
    if not cut:
        return
    scored = sum(r["candidates"] for r in reports if r)
    over = f" (over {queries} queries)" if queries > 1 else ""
    click.echo(f"note: {cut} of {scored} reranked passages{over} were cut to the reranker's "
               f"context ({reports[0]['context']} tokens)", err=True)


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


def _check_path(path_glob: str) -> None:
    """Refuse a --path that can match nothing (empty, a ``[`` never closed) or is too long
    in one line, before the index is opened or a model loaded."""
    index_paths.glob(path_glob)  # an InputError is one line, escaped, as the group maps it


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
def _warnings_to_stderr() -> Iterator[list[Any]]:
    """The library's warnings (a query cut to the context) as one ``warning:`` line each,
    printed as the block ends; it yields the list they are gathered in."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", QueryTruncated)
        warnings.simplefilter("always", NonFiniteVectors)
        try:
            yield caught
        finally:
            for w in caught:
                if issubclass(w.category, (QueryTruncated, NonFiniteVectors)):
                    click.echo(terminal_text(f"warning: {w.message}"), err=True)
                else:
                    warnings.showwarning(w.message, w.category, w.filename, w.lineno)
