"""The `get` tool's reading rules, in-process (fake embedder): PDFs by page, line ranges."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_embed.errors import InputError
from gguf_embed.index import Index
from gguf_embed.mcp_server import Service
from gguf_embed.testing import FakeEngine


def tiny_pdf(pages: list[list[str]]) -> bytes:
    """A valid PDF with one line of Helvetica text per string, one page per list."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    for lines in pages:
        ops = "BT /F1 12 Tf 14 TL 72 720 Td " + " ".join(
            f"({line}) Tj T*" for line in lines) + " ET"
        stream = ops.encode()
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        content = len(objects)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents "
                       b"%d 0 R /Resources << /Font << /F1 %d 0 R >> >> >>"
                       % (content, 0))  # font number patched below
        kids.append(len(objects))
    font = len(objects) + 1
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    objects = [o.replace(b"/F1 0 0 R", b"/F1 %d 0 R" % font) for o in objects]
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


@pytest.fixture()
def service(tmp_path: Path) -> Service:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "manual.pdf").write_bytes(tiny_pdf([["Installing the tool", "Run the installer"],
                                                ["Configuring logs", "Set the level",
                                                 "Rotate daily"]]))
    (docs / "notes.md").write_text("one\ntwo\nthree\n")
    engine = FakeEngine()
    with Index(tmp_path / "i.db", engine) as index:
        summary = index.add([docs])
    assert summary.added == 2, summary.to_dict()
    return Service(engine, tmp_path / "i.db")


def test_pdf_lines_count_within_a_page(service: Service, tmp_path: Path) -> None:
    path = str(tmp_path / "docs" / "manual.pdf")
    first = service.get(path)
    assert (first["page"], first["pages"]) == (1, 2)
    assert first["text"] == "Installing the tool\nRun the installer"
    part = service.get(path, 2, 3, page=2)
    assert part["text"] == "Set the level\nRotate daily"
    with pytest.raises(InputError, match="pass the page"):
        service.get(path, 2, 3)
    with pytest.raises(InputError, match="no page 3"):
        service.get(path, page=3)


def test_line_ranges_of_text_files(service: Service, tmp_path: Path) -> None:
    path = str(tmp_path / "docs" / "notes.md")
    whole = service.get(path)
    assert (whole["text"], whole["total_lines"], whole["end_line"]) == ("one\ntwo\nthree", 3, 3)
    assert service.get(path, 2, 99)["text"] == "two\nthree"  # an end past the file is clipped
    assert service.get("notes.md", 3)["text"] == "three"  # relative to an indexed folder
