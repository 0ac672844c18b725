"""The keyword side of the index: what text FTS5 sees, and free text → an FTS5 query.

FTS5's ``unicode61`` tokenizer splits on spaces and punctuation, so a run of Chinese or Japanese
characters (and a Korean word with its particles) is one token, and a word inside it can never
match.  Before a chunk goes into the FTS table, every run of CJK characters is rewritten as its
overlapping character bigrams (``数据库`` → ``数据 据库``; a lone character stays itself), and a
query is rewritten the same way.  Text without CJK characters passes through unchanged, so
English ranking is exactly what it was.  Bigrams beat a trigram index and the jieba segmenter on
the tldr pages (BENCHMARKS.md), need no dictionary, and work the same for all three languages.

The bigrams go in a column of their own (:func:`keyword_columns`), weighted ``CJK_WEIGHT`` in
BM25: a word of n characters matches as n - 1 overlapping pairs, so at full weight a common
phrase outscores the rare Latin word (a command or product name) beside it in the query.

Snippets come from the stored chunk text, never from this form.
"""

from __future__ import annotations

import re

# Han (with extensions and compatibility ideographs), kana (with the prolonged sound mark and
# half-width forms), and Hangul syllables and jamo.  CJK punctuation is left to unicode61.
CJK_RUN = re.compile(
    "["
    "\u1100-\u11ff\u3040-\u309f\u30a0-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\ud7b0-\ud7ff\uf900-\ufaff\uff66-\uff9f"
    "\U00020000-\U0003134f"
    "]+")
WORD = re.compile(r"\w+", re.UNICODE)
# The formats an FTS table can be in (recorded in meta as "fts_format").
UNICODE61 = "unicode61"
CJK_BIGRAMS = "cjk-bigrams"  # one column: the text with its CJK runs as bigrams
CJK_COLUMN = "cjk-column"  # two columns: the text without CJK runs, and their bigrams
# BM25 weight of the bigram column against the word column (1.0): the middle of the range
# (0.3-0.5) that scored best on all three languages of tldr-cjk, BENCHMARKS.md.
CJK_WEIGHT = 0.4


def bigrams(run: str) -> list[str]:
    """Overlapping character pairs of a CJK run; a single character is kept as it is."""
    if len(run) < 2:
        return [run]
    return [run[i:i + 2] for i in range(len(run) - 1)]


def index_text(text: str) -> str:
    """The text FTS5 indexes for ``text``: CJK runs as space-separated bigrams."""
    if not CJK_RUN.search(text):
        return text
    return CJK_RUN.sub(lambda m: " " + " ".join(bigrams(m.group())) + " ", text)


def keyword_columns(text: str) -> tuple[str, str]:
    """The two columns FTS5 indexes for ``text``: its words outside CJK runs, and the runs'
    bigrams."""
    runs = CJK_RUN.findall(text)
    if not runs:
        return text, ""
    return CJK_RUN.sub(" ", text), " ".join(b for run in runs for b in bigrams(run))


def query_terms(query: str, fts_format: str = CJK_COLUMN) -> list[str]:
    """The distinct lower-cased terms of a query, tokenized like the index it goes to."""
    text = query if fts_format == UNICODE61 else index_text(query)
    return list(dict.fromkeys(w.lower() for w in WORD.findall(text)))


def fts_query(query: str, fts_format: str = CJK_COLUMN) -> str:
    """Free text → an FTS5 query that cannot be a syntax error: quoted terms joined by OR."""
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in query_terms(query, fts_format))
