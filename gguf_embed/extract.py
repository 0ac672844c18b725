"""File → text with line (and page) numbers, per format: text and code, Markdown, reST, HTML, PDF.

Every line of the extracted text maps to a line in the source file (``lines``, 1-based), and for
PDFs to a page (``pages``).  Anything that cannot be read becomes a :class:`Skip` with a reason
naming what is wrong; it never raises for bad input.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

from .errors import first_line

BINARY_SNIFF = 8192
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
# A line this long is minified or machine-written (bundled JS, one-line JSON or CSV dumps):
# its text embeds as noise and costs hours on a CPU, so such a file is skipped by name.
MINIFIED_LINE_CHARS = 100_000
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
PDF_SUFFIXES = {".pdf"}
SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "head"}


@dataclass
class Extracted:
    """The text of one file; ``lines[i]`` / ``pages[i]`` locate text line i in the source."""

    text: str
    lines: list[int]
    pages: list[int] | None = None
    kind: str = "text"
    lines_text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.lines_text:
            self.lines_text = self.text.split("\n")


@dataclass(frozen=True)
class Skip:
    """Why a file was not indexed; ``failed`` marks errors (as opposed to skips by design)."""

    reason: str
    failed: bool = False


def extract(path: Path, data: bytes | None = None,
            max_bytes: int = DEFAULT_MAX_BYTES) -> Extracted | Skip:
    """Extract ``path`` (or its already-read ``data``)."""
    if data is None:
        try:
            size = path.stat().st_size
            if size > max_bytes:
                return too_large(size, max_bytes)
            data = path.read_bytes()
        except PermissionError:
            return Skip("unreadable: permission denied", failed=True)
        except OSError as exc:
            return Skip(f"unreadable: {exc.strerror or exc}", failed=True)
    if len(data) > max_bytes:
        return too_large(len(data), max_bytes)
    if not data.strip():
        return Skip("empty")
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES or data[:5] == b"%PDF-":
        return extract_pdf(data)
    if b"\x00" in data[:BINARY_SNIFF]:
        return Skip("binary")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Skip(f"not UTF-8 text (invalid byte at offset {exc.start}); convert it to UTF-8",
                    failed=True)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    longest = max(map(len, text.split("\n")))
    if longest > MINIFIED_LINE_CHARS:
        return Skip(f"minified or machine-written (a line of {longest:,} characters, over "
                    f"{MINIFIED_LINE_CHARS:,}); reformat it with line breaks to index it")
    if suffix in HTML_SUFFIXES:
        return extract_html(text)
    kind = "markdown" if suffix in {".md", ".markdown", ".mdx"} else (
        "rst" if suffix == ".rst" else "text")
    n = text.count("\n") + 1
    return Extracted(text=text, lines=list(range(1, n + 1)), kind=kind)


def too_large(size: int, limit: int) -> Skip:
    return Skip(f"too large ({size / 1e6:.1f} MB > {limit / 1e6:.0f} MB limit; "
                f"raise --max-file-size to index it)")


class _HtmlText(HTMLParser):
    """Collects visible text, line by line, keeping each piece's source line number."""

    BLOCK: ClassVar[set[str]] = {
        "p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "section",
        "article", "table", "ul", "ol", "blockquote", "hr", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: dict[int, list[str]] = {}
        self.skip_depth = 0
        self.heading: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in SKIP_TAGS:
            self.skip_depth += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._add("\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self._add("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in SKIP_TAGS:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in self.BLOCK:
            self._add("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            line = self.getpos()[0]
            for offset, piece in enumerate(data.split("\n")):
                self.out.setdefault(line + offset, []).append(piece)

    def _add(self, text: str) -> None:
        if not self.skip_depth:
            self.out.setdefault(self.getpos()[0], []).append(text)


def extract_html(source: str) -> Extracted | Skip:
    parser = _HtmlText()
    try:
        parser.feed(source)
        parser.close()
    except Exception as exc:  # html.parser is lenient; anything else is a broken file
        return Skip(f"broken HTML: {exc}", failed=True)
    texts: list[str] = []
    lines: list[int] = []
    for line_no in sorted(parser.out):
        for part in "".join(parser.out[line_no]).split("\n"):
            cleaned = re.sub(r"[ \t\xa0]+", " ", html.unescape(part)).strip()
            if cleaned:
                texts.append(cleaned)
                lines.append(line_no)
    if not texts:
        return Skip("empty (no visible text)")
    return Extracted(text="\n".join(texts), lines=lines, kind="html")


def extract_pdf(data: bytes) -> Extracted | Skip:
    try:
        import io

        from pypdf import PdfReader
        from pypdf.errors import DependencyError
    except ImportError:  # pragma: no cover - pypdf is a dependency
        return Skip("PDF support needs pypdf: pip install pypdf", failed=True)
    import logging

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        # a PDF with only an owner password (permissions) opens with the empty user password
        if reader.is_encrypted and not reader.decrypt(""):
            return Skip("encrypted PDF (needs a password); decrypt it first", failed=True)
        texts: list[str] = []
        lines: list[int] = []
        pages: list[int] = []
        for page_no, page in enumerate(reader.pages, 1):
            content = (page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n")
            for line_no, line in enumerate(content.split("\n"), 1):
                texts.append(line.rstrip())
                lines.append(line_no)
                pages.append(page_no)
    except DependencyError:
        return Skip("encrypted PDF (AES); install the 'cryptography' package to read it",
                    failed=True)
    except Exception as exc:  # pypdf raises many kinds on broken files; one file, one skip
        why = first_line(exc, empty="unreadable", limit=200)
        return Skip(f"broken PDF: {type(exc).__name__}: {why}", failed=True)
    if not any(t.strip() for t in texts):
        return Skip("PDF has no extractable text (scanned images?)")
    return Extracted(text="\n".join(texts), lines=lines, pages=pages, kind="pdf")


