#!/usr/bin/env python3
"""Keyword search alone, one FTS5 tokenization against another, on the tldr eval recipe
(tests/support/eval.py): MRR@10 and Recall@10 per language, BM25 over whole pages, no model.

    python -m scripts.eval_keywords                 # en, zh, ja, ko (tests/data: 22 CJK pages each)
    python -m scripts.eval_keywords --corpus ../shared/corpora   # all the tldr-cjk pages
    python -m scripts.eval_keywords --lang zh --jieba   # adds a jieba row (pip install jieba)

Rows: FTS5 `porter unicode61` on the raw text (what indexes had before), FTS5 `trigram`
(CJK query runs cut into trigrams), CJK bigrams in the one text column (the first CJK format),
CJK bigrams in a column of their own weighted CJK_WEIGHT in BM25 (gguf_embed.keywords, what the
index uses now) and at other weights, bigrams plus unigrams, and optionally the jieba segmenter
(search mode) for Chinese; and the chosen index through keyword_topk, keyword_postings and
INDEX.keywords (the exact top k the index computes without scoring every match, issue 21),
which must equal the chosen row.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from gguf_embed.keywords import (
    CJK_RUN,
    CJK_WEIGHT,
    UNICODE61,
    WORD,
    bigrams,
    fts_query,
    index_text,
    keyword_columns,
    query_terms,
)
from tests.support.eval import K, build_docs, metrics

ROOT = Path(__file__).resolve().parent.parent

Transform = Callable[[str], str]


def with_unigrams(text: str) -> str:
    return CJK_RUN.sub(lambda m: " " + " ".join([*m.group(), *bigrams(m.group())]) + " ", text)


def with_trigrams(text: str) -> str:
    def grams(run: str) -> list[str]:
        return bigrams(run) + [run[i:i + 3] for i in range(len(run) - 2)]
    return CJK_RUN.sub(lambda m: " " + " ".join(grams(m.group())) + " ", text)


def with_runs(text: str) -> str:
    """Bigrams plus the whole run, so that an exact run scores on top of its pairs."""
    return CJK_RUN.sub(lambda m: " " + " ".join([m.group(), *bigrams(m.group())]) + " ", text)


def phrase_query(query: str) -> str:
    """Each CJK run's bigrams as one phrase (adjacent pairs), OR'ed with every term."""
    phrases = [" ".join(bigrams(run)) for run in CJK_RUN.findall(query) if len(run) > 2]
    extra = " OR ".join('"' + p + '"' for p in dict.fromkeys(phrases))
    base = fts_query(query)
    return f"{base} OR {extra}" if extra and base else base or extra


def cjk_only(query: str) -> str:
    """The query without its Latin words (command and product names), CJK words alone."""
    return " ".join(CJK_RUN.findall(query))


def trigram_query(query: str) -> str:
    terms: list[str] = []
    for word in WORD.findall(query.lower()):
        for run in CJK_RUN.split(word) + CJK_RUN.findall(word):
            if not run:
                continue
            if CJK_RUN.fullmatch(run):
                terms += [run[i:i + 3] for i in range(max(len(run) - 2, 1))]
            else:
                terms.append(run)
    terms = [t for t in dict.fromkeys(terms) if len(t) >= 3]
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


COMMON_SHARE = 0.02  # tried for issue 21 (keyword search at 10^6 chunks): not taken


def terms_query(terms: list[str]) -> str:
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def rare_terms(terms: list[str], docs: Callable[[str, int], int], total: int,
               share: float) -> list[str]:
    """``terms`` without those in more than ``share`` of ``total`` documents (``docs(term,
    cap)`` counts up to ``cap``), keeping the rarest when all are common."""
    cap = int(share * total) + 1
    counts = {t: docs(t, cap) for t in terms}
    kept = [t for t in terms if counts[t] < cap]
    return kept or [min(terms, key=lambda t: counts[t])]


def run(docs: dict[str, str], queries: dict[str, str], tokenizer: str, doc_form: Transform,
        make_query: Callable[[str], str]) -> dict[str, float]:
    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE f USING fts5(path UNINDEXED, text, tokenize='{tokenizer}')")
    conn.executemany("INSERT INTO f(path, text) VALUES (?, ?)",
                     [(p, doc_form(t)) for p, t in docs.items()])
    ranks: list[int | None] = []
    for path, query in queries.items():
        match = make_query(query)
        found = [r[0] for r in conn.execute(
            "SELECT path FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT ?", (match, K))] \
            if match else []
        ranks.append(found.index(path) + 1 if path in found else None)
    return metrics(ranks)


def run_columns(docs: dict[str, str], queries: dict[str, str],
                weight: float, common: float | None = None) -> dict[str, float]:
    """Words and CJK bigrams in two columns, the bigrams weighted ``weight`` in BM25; with
    ``common``, terms in more than that share of the documents are left out of a query when
    rarer ones remain (an idea for speed at 10^6 chunks, measured here and not taken)."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE f USING fts5(path UNINDEXED, text, cjk, "
                 "tokenize='porter unicode61')")
    conn.executemany("INSERT INTO f(path, text, cjk) VALUES (?, ?, ?)",
                     [(p, *keyword_columns(t)) for p, t in docs.items()])
    ranks: list[int | None] = []
    def count(term: str, cap: int) -> int:
        return int(conn.execute("SELECT count(*) FROM (SELECT 1 FROM f WHERE f MATCH ? LIMIT ?)",
                                (terms_query([term]), cap)).fetchone()[0])

    for path, query in queries.items():
        terms = query_terms(query)
        if common is not None and len(terms) > 1:
            terms = rare_terms(terms, count, len(docs), common)
        match = terms_query(terms)
        found = [r[0] for r in conn.execute(
            f"SELECT path FROM f WHERE f MATCH ? ORDER BY bm25(f, 0, 1.0, {weight}) LIMIT ?",
            (match, K))] if match else []
        ranks.append(found.index(path) + 1 if path in found else None)
    return metrics(ranks)


def run_topk(docs: dict[str, str], queries: dict[str, str], share: float,
             postings: bool = False, cache: bool = False) -> dict[str, float]:
    """What the index does (issue 21): the exact top k of keyword_topk over the store's own
    table layout, ``share`` forced low so that the fast path answers most queries; FTS5's
    query when it cannot tell.  ``postings``: through keyword_postings instead (every phrase
    read at once); ``cache``: through INDEX.keywords (store_keyword_cache), every word in 5
    documents or more in it."""
    import apsw

    from gguf_embed import store_keyword_cache as keyword_cache
    from gguf_embed import store_keyword_postings as keyword_postings
    from gguf_embed import store_keyword_stats as keyword_stats
    from gguf_embed import store_keyword_topk as keyword_topk

    keyword_postings.CHEAP_ROWS = keyword_postings.FIRST_ROWS = 10**9

    conn = apsw.Connection(":memory:")
    conn.execute("CREATE TABLE chunks(id INTEGER PRIMARY KEY, text TEXT); "
                 "CREATE VIRTUAL TABLE fts_chunks USING fts5(text, cjk, content='', "
                 "contentless_delete=1, tokenize='porter unicode61')")
    paths = list(docs)
    conn.executemany("INSERT INTO chunks(id, text) VALUES (?, ?)",
                     [(i + 1, docs[p]) for i, p in enumerate(paths)])
    conn.executemany("INSERT INTO fts_chunks(rowid, text, cjk) VALUES (?, ?, ?)",
                     [(i + 1, *keyword_columns(docs[p])) for i, p in enumerate(paths)])
    conn.execute("CREATE TABLE chunk_log(id INTEGER PRIMARY KEY, epoch TEXT, inserted INTEGER, "
                 "deleted INTEGER)")
    conn.execute("INSERT INTO chunk_log VALUES (1, ?, ?, 0)", (str(lang_key(docs)), len(paths)))
    state = keyword_stats.State(str(lang_key(docs)), len(paths), 0)
    folder = tempfile.TemporaryDirectory()
    db = Path(folder.name) / "eval.db"
    if cache:
        stats = keyword_stats.build(conn, 5)
        assert stats is not None and keyword_stats.save(stats, keyword_stats.cache_path(db))
    ranks: list[int | None] = []
    answered = 0
    for path, query in queries.items():
        terms = query_terms(query)
        if cache:
            found = keyword_cache.topk(conn, db, (str(db), state), terms, K,
                                       (1.0, CJK_WEIGHT)) if terms else []
            answered += found is not None and bool(terms)
        elif postings:
            found = keyword_postings.topk(conn, ("eval-postings", lang_key(docs)), terms, K,
                                          (1.0, CJK_WEIGHT)) if terms else []
        else:
            found = keyword_topk.topk(conn, ("eval", lang_key(docs)), terms, K,
                                      (1.0, CJK_WEIGHT), share=share) if terms else []
        if found is None:
            found = [(int(r[0]), 0.0) for r in conn.execute(
                f"SELECT rowid, bm25(fts_chunks, 1.0, {CJK_WEIGHT}) s FROM fts_chunks "
                "WHERE fts_chunks MATCH ? ORDER BY s LIMIT ?", (fts_query(query), K))]
        hits = [paths[i - 1] for i, _ in found]
        ranks.append(hits.index(path) + 1 if path in hits else None)
    folder.cleanup()
    if cache:
        print(f"INDEX.keywords answered {answered} of {len(queries)} queries", file=sys.stderr)
    return metrics(ranks)


def lang_key(docs: dict[str, str]) -> int:
    return hash(tuple(docs))


def rows(corpus: Path, lang: str, use_jieba: bool,
         cjk_queries: bool = False) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        queries = build_docs(corpus, Path(tmp), None, lang)
        docs = {p: Path(p).read_text(encoding="utf-8") for p in queries}
    if cjk_queries:
        queries = {p: cjk_only(q) for p, q in queries.items() if cjk_only(q)}
    same: Transform = lambda text: text  # noqa: E731
    out = {
        "porter unicode61 (before)": run(docs, queries, "porter unicode61", same,
                                         lambda q: fts_query(q, UNICODE61)),
        "trigram": run(docs, queries, "trigram", same, trigram_query),
        "CJK bigrams, one column (before)": run(docs, queries, "porter unicode61",
                                                index_text, fts_query),
        f"CJK bigrams, own column at {CJK_WEIGHT} (chosen)": run_columns(docs, queries,
                                                                     CJK_WEIGHT),
        "chosen, exact top k without scoring every match (keyword_topk)": run_topk(
            docs, queries, 0.02),
        "chosen, exact top k from phrase postings in memory (keyword_postings)": run_topk(
            docs, queries, 0.02, postings=True),
        "chosen, exact top k from INDEX.keywords (store_keyword_cache)": run_topk(
            docs, queries, 0.02, cache=True),
        **{f"chosen, terms in over {share:.0%} of documents left out": run_columns(
            docs, queries, CJK_WEIGHT, share) for share in (COMMON_SHARE, 0.05)},
        **{f"CJK bigrams, own column at {w}": run_columns(docs, queries, w)
           for w in (0.2, 0.3, 0.5, 0.7) if w != CJK_WEIGHT},
        "CJK bigrams + unigrams": run(docs, queries, "porter unicode61", with_unigrams,
                                      lambda q: fts_query(with_unigrams(q), UNICODE61)),
        "CJK bigrams + whole runs": run(docs, queries, "porter unicode61", with_runs,
                                        lambda q: fts_query(with_runs(q), UNICODE61)),
        "CJK bigrams, runs also as phrases": run(docs, queries, "porter unicode61", index_text,
                                                 phrase_query),
        "CJK bigrams + trigrams": run(docs, queries, "porter unicode61", with_trigrams,
                                      lambda q: fts_query(with_trigrams(q), UNICODE61)),
    }
    if use_jieba and lang == "zh":
        import jieba

        jieba.setLogLevel(60)

        def seg(text: str) -> str:
            return " ".join(jieba.cut_for_search(text))

        out["jieba cut_for_search"] = run(docs, queries, "porter unicode61", seg,
                                          lambda q: fts_query(seg(q), UNICODE61))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data",
                        help="a folder with tldr-linux/ and tldr-cjk/ (default: tests/data)")
    parser.add_argument("--lang", action="append", choices=("en", "zh", "ja", "ko"))
    parser.add_argument("--jieba", action="store_true", help="add a jieba row for Chinese")
    parser.add_argument("--cjk-queries", action="store_true",
                        help="drop the Latin words (command names) from the queries")
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    report = {lang: rows(opts.corpus, lang, opts.jieba, opts.cjk_queries)
              for lang in opts.lang or ["en", "zh", "ja", "ko"]}
    if opts.json:
        print(json.dumps(report, indent=2))
        return
    print("| language | keyword index | MRR@10 | Recall@10 |")
    print("| --- | --- | ---: | ---: |")
    for lang, table in report.items():
        for name, m in table.items():
            print(f"| {lang} | {name} | {m['mrr@10']:.4f} | {m['recall@10']:.4f} |")


if __name__ == "__main__":
    main()
