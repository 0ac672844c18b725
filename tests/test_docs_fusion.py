"""docs/searching.md states the fusion constants the code uses, and example scores they give."""

from __future__ import annotations

import re
from pathlib import Path

from gguf_embed.fusion import CHUNK_RRF_K, FILE_RRF_K

DOC = Path(__file__).resolve().parent.parent / "docs" / "searching.md"


def test_searching_doc_states_the_fusion_constants_and_their_scores() -> None:
    text = DOC.read_text()
    assert f"k = {FILE_RRF_K} over files, k = {CHUNK_RRF_K} over chunks" in text
    assert f"`1 / ({FILE_RRF_K} + rank)`" in text
    # the example output: a file first in both lists, then one first and second
    scores = [float(s) for s in re.findall(r"^\S+:\d+-\d+.*  (\d\.\d{4})$", text, re.M)]
    assert scores[:2] == [round(2 / (FILE_RRF_K + 1), 4),
                          round(1 / (FILE_RRF_K + 1) + 1 / (FILE_RRF_K + 2), 4)]
