"""Token-aware chunks with overlap that keep their line (and page) ranges.

Chunks are built from whole lines, sized with the model's own tokenizer; a chunk ends at the
last heading, else the last blank line (paragraph), else the last line that fits, and the next
chunk starts ``overlap`` tokens earlier.  A single line longer than a chunk is split by
characters, in time linear in its length (a 20 MB minified line takes seconds, not hours).
Every chunk is checked against the exact token count, so none is ever longer than
``max_tokens``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:  # a search needs ChunkSettings only, not the extractors
    from .extract import Extracted

MD_HEADING = re.compile(r"^#{1,6}\s")
LONG_LINE_CHARS_PER_TOKEN = 16  # a line over budget x this many characters goes to _split_long


@dataclass(frozen=True)
class ChunkSettings:
    max_tokens: int
    overlap: int

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise InputError(f"chunk size must be a whole number of tokens from 1, got "
                             f"{self.max_tokens!r}", param="chunk_tokens")
        if not isinstance(self.overlap, int) or not 0 <= self.overlap < self.max_tokens:
            raise InputError(f"chunk overlap must be from 0 to less than the chunk size "
                             f"({self.max_tokens} tokens), got {self.overlap!r}",
                             param="chunk_overlap")

    @classmethod
    def for_context(cls, context: int) -> ChunkSettings:
        """Defaults fitted to a model's context: 8,192/512 for 32k models, smaller for small."""
        if context <= 512:
            size = max(32, min(256, context - 16))
            return cls(max_tokens=size, overlap=32 if size > 64 else size // 4)
        size = min(8192, context // 4)
        return cls(max_tokens=size, overlap=max(32, size // 16))

    def to_dict(self) -> dict[str, int]:
        return {"max_tokens": self.max_tokens, "overlap": self.overlap}


@dataclass(frozen=True)
class Chunk:
    text: str
    start_line: int
    end_line: int
    start_page: int | None
    end_page: int | None
    n_tokens: int

    @functools.cached_property
    def hash(self) -> str:
        """sha256 of the text: the key under which its vector is reused."""
        import hashlib  # here: OpenSSL's start-up is for indexing, not for a search

        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def chunk(doc: Extracted, count: Callable[[str], int], settings: ChunkSettings,
          count_many: Callable[[list[str]], list[int]] | None = None) -> list[Chunk]:
    """Split ``doc`` into chunks of at most ``settings.max_tokens`` tokens (by ``count``;
    ``count_many``, if given, counts the lines in one call, then the chunks in one more, as
    ``count`` would one by one: a remote engine asks its server twice per document, not once
    per chunk)."""
    lines = doc.lines_text
    budget = settings.max_tokens
    limit = budget * LONG_LINE_CHARS_PER_TOKEN
    counted = iter(count_many([t for t in lines if len(t) <= limit])) if count_many else None
    pieces: list[tuple[str, int, int | None]] = []  # (text, source line, page)
    sizes: list[int] = []  # tokens of each piece, +1 for the newline joining lines
    for i, text in enumerate(lines):
        page = doc.pages[i] if doc.pages else None
        # a line of many times the budget in characters is not tokenized whole, only split
        n = budget + 1 if len(text) > limit else next(counted) if counted else count(text)
        if n > budget:
            for part in _split_long(text, count, budget):
                pieces.append((part, doc.lines[i], page))
                sizes.append(count(part) + 1)
        else:
            pieces.append((text, doc.lines[i], page))
            sizes.append(n + 1)
    spans: list[tuple[int, int]] = []  # (start, end) of each chunk's pieces
    start = 0
    n = len(pieces)
    while start < n:
        while start < n and not pieces[start][0].strip():
            start += 1
        if start >= n:
            break
        end, used = start, 0
        while end < n and used + sizes[end] <= budget:
            used += sizes[end]
            end += 1
        end = max(end, start + 1)
        if end < n:
            end = _best_break(pieces, start, end)
        spans.append((start, end))
        if end >= n:
            break
        # step back for the overlap, but always move forward
        back, carried = end, 0
        while back - 1 > start and carried + sizes[back - 1] <= settings.overlap:
            back -= 1
            carried += sizes[back]
        start = back if back > start else end
    texts = [_text(pieces[s:e])[1] for s, e in spans]
    counts = count_many(texts) if count_many and texts else [count(t) for t in texts]
    chunks: list[Chunk] = []
    for (s, e), n_tokens in zip(spans, counts, strict=True):
        chunks.extend(_make(pieces, s, e, count, budget, n_tokens))
    return chunks


def _best_break(pieces: list[tuple[str, int, int | None]], start: int, end: int) -> int:
    """Where to end a chunk that would run to ``end``: before a heading, else after a blank
    line, in the second half of the chunk; else at ``end``."""
    half = start + (end - start) // 2
    for i in range(end - 1, half, -1):
        if MD_HEADING.match(pieces[i][0]):
            return i
    for i in range(end - 1, half, -1):
        if not pieces[i][0].strip():
            return i + 1
    return end


def _text(part: list[tuple[str, int, int | None]]
          ) -> tuple[list[tuple[str, int, int | None]], str]:
    """The pieces of a chunk without trailing blank lines, and its text."""
    while part and not part[-1][0].strip():
        part = part[:-1]
    return part, "\n".join(p[0] for p in part)


def _make(pieces: list[tuple[str, int, int | None]], start: int, end: int,
          count: Callable[[str], int], budget: int, known: int | None = None) -> list[Chunk]:
    """The chunk of ``pieces[start:end]`` (``known``: its tokens, counted already), halved
    until each part fits."""
    part, text = _text(pieces[start:end])
    n_tokens = count(text) if known is None else known
    if n_tokens > budget and len(part) > 1:  # the per-line estimate was low: halve and retry
        mid = len(part) // 2
        return (_make(pieces, start, start + mid, count, budget)
                + _make(pieces, start + mid, end, count, budget))
    pages = [p[2] for p in part if p[2] is not None]
    return [Chunk(text=text, start_line=part[0][1], end_line=part[-1][1],
                  start_page=min(pages) if pages else None,
                  end_page=max(pages) if pages else None, n_tokens=n_tokens)]


def _split_long(text: str, count: Callable[[str], int], budget: int) -> list[str]:
    """Cut one over-long line into pieces of at most ``budget`` tokens, at spaces if any.

    Linear in the line's length: only a window a little longer than one piece is ever counted,
    and the cut is found by interpolating on the characters per token just measured (a piece
    filled to 90 % of the budget is good enough), with bisection as the fallback."""
    out: list[str] = []
    pos, n = 0, len(text)
    per_token = 4.0  # characters per token, re-measured at every count
    while pos < n:
        size = max(64, int(budget * per_token * 1.25))
        while True:  # a window that overflows the budget (or the rest of the line, which fits)
            end = min(n, pos + size)
            used = count(text[pos:end])
            if used > budget:
                break
            if end == n:
                out.append(text[pos:])
                return out
            size *= 2
        per_token = (end - pos) / used
        lo, hi = pos, end  # text[pos:lo] fits, text[pos:hi] does not
        for step in range(64):
            if hi - lo <= 1:
                break
            guess = pos + int(budget * 0.95 * per_token) if step < 3 else (lo + hi) // 2
            guess = min(max(guess, lo + 1), hi - 1)
            used = count(text[pos:guess])
            per_token = (guess - pos) / max(used, 1)
            if used > budget:
                hi = guess
            else:
                lo = guess
                if used >= budget * 0.9:
                    break
        cut = max(lo, pos + 1)
        space = text.rfind(" ", pos, cut)
        if space > pos + (cut - pos) // 2:
            cut = space
        out.append(text[pos:cut])
        pos = cut
        while pos < n and text[pos] == " ":
            pos += 1
    return out
