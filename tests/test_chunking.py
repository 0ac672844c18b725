"""Chunking by the model's own tokens, and extraction with line and page numbers."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gguf_embed import Engine
from gguf_embed.chunking import ChunkSettings, chunk
from gguf_embed.extract import Extracted, Skip, extract


def counter(engine: Engine):
    return lambda text: len(engine.tokenize(engine.spec.format_document(text)))


def test_defaults_fit_the_context() -> None:
    assert ChunkSettings.for_context(32768) == ChunkSettings(8192, 512)
    small = ChunkSettings.for_context(512)
    assert small.max_tokens <= 512 - 16 and small.overlap < small.max_tokens
    assert ChunkSettings.for_context(2048).max_tokens == 512


@pytest.mark.parametrize("engine_name", ["minilm", "qwen"])
def test_chunks_fit_cover_and_overlap(engine_name: str, request, corpora: Path) -> None:
    engine: Engine = request.getfixturevalue(engine_name)
    doc = extract(corpora / "pdf" / "R-FAQ.pdf")
    assert isinstance(doc, Extracted) and doc.pages
    count = counter(engine)
    settings = ChunkSettings(200, 40)
    chunks = chunk(doc, count, settings)
    assert len(chunks) > 20
    for c in chunks:
        assert c.n_tokens == count(c.text) <= 200  # exact, never over the budget
        assert c.start_page is not None and c.start_page <= c.end_page
    # in order, each starting no earlier than the one before, overlapping by some lines
    starts = [(c.start_page, c.start_line) for c in chunks]
    assert starts == sorted(starts)
    overlaps = sum(1 for a, b in itertools.pairwise(chunks)
                   if b.text.split("\n")[0] in a.text)
    assert overlaps > len(chunks) // 2
    # every non-blank line of the document is in some chunk
    text = "\n".join(c.text for c in chunks)
    missing = [ln for ln in doc.lines_text if ln.strip() and ln not in text]
    assert not missing


def test_line_numbers_point_at_the_source(qwen: Engine, tmp_path: Path) -> None:
    lines = [f"line {i} " + "word " * 20 for i in range(1, 201)]
    path = tmp_path / "f.txt"
    path.write_text("\n".join(lines))
    doc = extract(path)
    assert isinstance(doc, Extracted)
    for c in chunk(doc, counter(qwen), ChunkSettings(120, 20)):
        first, last = c.text.split("\n")[0], c.text.split("\n")[-1]
        assert first == lines[c.start_line - 1] and last == lines[c.end_line - 1]


def test_breaks_at_headings(qwen: Engine, tmp_path: Path) -> None:
    sections = [f"# Section {i}\n" + "\n".join(f"text {i}.{j} " * 5 for j in range(3))
                for i in range(8)]
    path = tmp_path / "doc.md"
    path.write_text("\n\n".join(sections))
    doc = extract(path)
    chunks = chunk(doc, counter(qwen), ChunkSettings(150, 0))
    assert len(chunks) > 2
    assert sum(c.text.startswith("# Section") for c in chunks) >= len(chunks) - 1


def test_one_huge_line_is_split(minilm: Engine, tmp_path: Path) -> None:
    path = tmp_path / "min.js"
    path.write_text("var a=1;" * 3000)
    doc = extract(path)
    chunks = chunk(doc, counter(minilm), ChunkSettings(100, 10))
    assert len(chunks) > 10 and all(c.n_tokens <= 100 for c in chunks)
    assert all(c.start_line == c.end_line == 1 for c in chunks)


def test_html_text_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "page.html"
    path.write_text("<html><head><title>T</title><style>p{}</style></head>\n<body>\n"
                    "<h1>Install</h1>\n<p>Run <b>make</b> &amp; wait.</p>\n"
                    "<script>var x = 1;</script>\n<p>Done</p></body></html>\n")
    doc = extract(path)
    assert isinstance(doc, Extracted)
    assert doc.lines_text == ["# Install", "Run make & wait.", "Done"]
    assert doc.lines == [3, 4, 6]


def test_pdf_pages(corpora: Path) -> None:
    doc = extract(corpora / "pdf" / "R-FAQ.pdf")
    assert isinstance(doc, Extracted) and doc.kind == "pdf"
    assert doc.pages and max(doc.pages) > 50
    assert len(doc.lines) == len(doc.pages) == len(doc.lines_text)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"), (b"\x00\x01\x02binary", "binary"), (b"\xff\xfeabc", "not UTF-8"),
    (b"%PDF-1.7 broken", "broken PDF")])
def test_bad_files(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    result = extract(path)
    assert isinstance(result, Skip) and result.reason.startswith(reason)


def test_count_many_counts_the_chunks_in_one_call_too(qwen: Engine, tmp_path: Path) -> None:
    """A remote engine counts tokens on its server: the lines in one request, then every
    chunk in one more, never one request per chunk; the chunks are the same either way."""
    sections = [f"# Section {i}\n" + "\n".join(f"text {i}.{j} " * 7 for j in range(6))
                for i in range(30)]
    path = tmp_path / "doc.md"
    path.write_text("\n\n".join(sections))
    doc = extract(path)
    assert isinstance(doc, Extracted)
    count = counter(qwen)
    singles: list[str] = []
    batches: list[int] = []

    def one(text: str) -> int:
        singles.append(text)
        return count(text)

    def many(texts: list[str]) -> list[int]:
        batches.append(len(texts))
        return [count(t) for t in texts]

    settings = ChunkSettings(120, 20)
    expected = chunk(doc, count, settings)
    got = chunk(doc, one, settings, many)
    assert len(expected) > 10 and got == expected
    assert singles == []  # no chunk had to be halved, no line split: nothing one by one
    assert len(batches) == 2 and batches[1] == len(expected)
