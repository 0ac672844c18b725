"""The top k of a query whose common words' shares come from ``INDEX.keywords``
(store_keyword_cache.py), without computing those shares for every row (issue 21).

A word in most rows has a small IDF, so its share of any row is at most a small bound.
MaxScore, exactly: sum the other phrases' shares (sparse: the rare words and the less
common cached ones) into one array, take the rows they rank first, compute every phrase's
share for those rows only, in query order (FTS5's sum, with its roundings), and keep the k
best when the k-th beats every row left out (its partial score + the common words' bounds,
or those bounds alone for a row that matches only common words).  Otherwise every share of
every row is summed (keyword_postings.best).  Either way the result is FTS5's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import store_keyword_file as kfile
from . import store_keyword_postings as keyword_postings

K1 = 1.2
B = 0.75
HEAVY_SHARE = 0.05  # cached phrases in more than this share of the rows: bounded, not summed
CANDIDATES = (8, 64, 256)  # rows per wanted result scored in full, in rounds, before summing all


class Shares:
    """A cached phrase's shares at one query; computed for every row only when asked
    (duck-typed as keyword_postings.Postings for ``keyword_postings.best``)."""

    def __init__(self, phrase: kfile.Phrase, freqs: np.ndarray, idf: float, avgdl: float,
                 sizes: np.ndarray, index_sizes: np.ndarray | None,
                 kd: np.ndarray | None) -> None:
        self.phrase = phrase
        self.freqs = freqs  # f of each (text, CJK) pair
        self.idf = idf
        self.avgdl = avgdl
        self.sizes = sizes  # D per rowid (NO_ROW where none)
        self.index_sizes = index_sizes  # the same as int32, 0 where none; None: too large
        self.table: np.ndarray | None = None
        if kd is not None and index_sizes is not None:
            # idf * ((f * (k1 + 1.0)) / (f + k1 * (1 - b + b * D / avgdl))) per (pair, D)
            self.table = idf * ((freqs * (K1 + 1.0))[:, None] / (freqs[:, None] + kd[None, :]))
        self._full: np.ndarray | None = None

    @property
    def end(self) -> int:
        p = self.phrase
        if p.rows is None:
            return len(p.codes)
        return int(p.rows[-1]) + 1 if len(p.rows) else 0

    def bound(self) -> float:
        """The largest share any row can have (D = 0 where there is a table; else over
        the rows)."""
        if self.table is not None:
            return float(self.table[1:].max()) if len(self.table) > 1 else 0.0
        full = self.full()
        return float(full.max()) if len(full) else 0.0

    def _compute(self, codes: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
        """Shares of the rows ``rows`` (None: the first ``len(codes)`` rowids) whose codes
        are ``codes``."""
        if self.table is not None and self.index_sizes is not None:
            index = codes.astype(np.int32)
            index *= self.table.shape[1]
            index += self.index_sizes[:len(codes)] if rows is None else self.index_sizes[rows]
            return self.table.ravel()[index]
        d = (self.sizes[:len(codes)] if rows is None else self.sizes[rows]).astype(np.float64)
        f_row = self.freqs[codes.astype(np.intp)]
        den = K1 * ((1 - B) + (B * d) / self.avgdl)
        den += f_row
        num = (self.freqs * (K1 + 1.0))[codes.astype(np.intp)]
        num /= den
        num *= self.idf
        return num

    def full(self) -> np.ndarray:
        """Each of the phrase's rows' share (dense: each rowid's, 0.0 where absent)."""
        if self._full is None:
            self._full = self._compute(self.phrase.codes, self.phrase.rows)
        return self._full

    def add_to(self, total: np.ndarray) -> None:
        p = self.phrase
        if p.rows is None:
            total[:len(p.codes)] += self.full()
        else:
            total[p.rows] += self.full()

    def at(self, rows: np.ndarray) -> np.ndarray:
        """The share of each of these rowids (0.0 where the phrase is absent)."""
        p = self.phrase
        out = np.zeros(len(rows), dtype=np.float64)
        if p.rows is None:
            inside = rows < len(p.codes)
            picked = rows[inside]
            codes = p.codes[picked]
            out[inside] = self._compute(codes, picked)
            return out
        if not len(p.rows):
            return out
        pos = np.minimum(np.searchsorted(p.rows, rows), len(p.rows) - 1)
        hit = p.rows[pos] == rows
        out[hit] = self.full()[pos[hit]]
        return out


def _at(phrase: Any, rows: np.ndarray) -> np.ndarray:
    """The share of each of these rowids, for a phrase read from FTS5 (Postings) or cached."""
    if isinstance(phrase, Shares):
        return phrase.at(rows)
    p: keyword_postings.Postings = phrase
    out = np.zeros(len(rows), dtype=np.float64)
    if p.rows is None:
        if p.codes is None:
            return out
        inside = rows < len(p.codes)
        out[inside] = p.values[p.codes[rows[inside]]]
        return out
    if not len(p.rows):
        return out
    pos = np.minimum(np.searchsorted(p.rows, rows), len(p.rows) - 1)
    hit = p.rows[pos] == rows
    out[hit] = p.values[pos[hit]] if p.codes is None else p.values[p.codes[pos[hit]]]
    return out


def best(phrases: list[Any], n_row: int, k: int) -> list[tuple[int, float]] | None:
    """(rowid, bm25) of the ``k`` best rows for these phrases' OR (query order), as FTS5
    ranks them; None where the rowids are too far apart to sum in one array."""
    heavy = {i for i, p in enumerate(phrases)
             if isinstance(p, Shares) and p.phrase.count > HEAVY_SHARE * n_row}
    if not heavy:
        return keyword_postings.best(phrases, k)
    size = max((p.end for p in phrases), default=0)
    if heavy and len(heavy) == len(phrases):  # the rarest is summed: it picks the rows
        heavy.discard(min(heavy, key=lambda i: phrases[i].phrase.count))
    if not heavy or size == 0 or size > keyword_postings.MAX_DENSE:
        return keyword_postings.best(phrases, k)
    bounds = {i: phrases[i].bound() for i in heavy}
    partial = np.zeros(size, dtype=np.float64)
    for i, p in enumerate(phrases):
        if i not in heavy:
            p.add_to(partial)
    while heavy:
        found, theta = _rounds(phrases, partial, sum(bounds[i] for i in heavy), k)
        if found is not None or theta is None:
            return found if found is not None else keyword_postings.best(phrases, k)
        # MaxScore: the common phrases that together stay below the k-th score found;
        # at least the one of the largest bound is summed from now on
        keep, total = set(), 0.0
        for i in sorted(heavy, key=lambda i: bounds[i]):
            if (total + bounds[i]) * (1.0 + 1e-6) >= theta:
                break
            total += bounds[i]
            keep.add(i)
        if keep == heavy:
            keep.discard(max(heavy, key=lambda i: bounds[i]))
        for i in heavy - keep:
            phrases[i].add_to(partial)
        heavy = keep
    return keyword_postings.best(phrases, k)


def _rounds(phrases: list[Any], partial: np.ndarray, margin: float,
            k: int) -> tuple[list[tuple[int, float]] | None, float | None]:
    """The top k when the rows ``partial`` ranks first settle it: (best, None); else (None,
    the k-th best full score found, or None when fewer than k rows were scored)."""
    margin *= 1.0 + 1e-9  # room for rounding: the partial sums are in another order
    hit = np.flatnonzero(partial)
    scores = partial[hit]
    most = min(len(hit), CANDIDATES[-1] * k + 1)  # one partition for every round
    top = np.argpartition(-scores, most - 1)[:most] if 0 < most < len(hit) \
        else np.arange(len(hit))
    top = top[np.argsort(-scores[top], kind="stable")]
    theta = None
    for per in CANDIDATES:
        want = per * k
        if len(hit) > want:  # the best row left out: the next in line
            chosen = np.sort(hit[top[:want]])  # ascending: the look-ups walk memory in order
            left_out = float(scores[top[want]]) * (1.0 + 1e-9) + margin
        else:
            chosen, left_out = hit, margin  # a row of common words alone
        total = np.zeros(len(chosen), dtype=np.float64)
        for p in phrases:  # query order: FTS5's sum, with the same roundings
            total += _at(p, chosen)
        if len(chosen) < k:
            return None, None
        order = np.lexsort((chosen, -total))[:k]
        theta = float(total[order[-1]])
        if theta > left_out:
            return [(int(chosen[i]), -1.0 * float(total[i])) for i in order], None
        if len(hit) <= want:
            break
    return None, theta
