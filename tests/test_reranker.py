"""Rerankers through llama.cpp against transformers (the same model class, random weights),
for both architectures: Qwen3-Reranker (Qwen3ForCausalLM, yes/no head, its prompt) and a
BERT-family cross-encoder (XLMRobertaForSequenceClassification, like bge-reranker-base).

Each check has a negative twin: a wrong prompt, a wrong pair template, a wrong token or a
wrong head gives a reference that ours must miss by far more than the tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gguf_embed import Engine, ModelLoadError, Reranker
from gguf_embed.reranker import (
    QWEN3_RERANK_INSTRUCTION,
    QWEN3_RERANK_PREFIX,
    QWEN3_RERANK_SUFFIX,
    best_window,
    head_problem,
)

TOL = 2e-4  # Qwen3: a probability
# XLM-R: a logit of size ~1; llama.cpp computes GELU from an f16 table and keeps K/V in f16,
# which moves these random-weight logits by up to ~0.006 (packed or not); every wrong
# template or head below moves them by 0.3 or more.
TOL_XLMR = 0.02
QUERY = "how do I extract a tar archive"
DOCS = [
    "Extract an archive: tar -xf archive.tar",
    "List the files in a directory, including hidden ones: ls -la",
    "Create a gzipped archive from a folder: tar -czf target.tar.gz folder",
    "Show the disk usage of each file: du -sh *",
    "Copy a file to a remote host over SSH: scp file user@host:path",
]


@pytest.fixture(scope="session")
def rerank_models(models_dir: Path) -> Path:
    """The test rerankers, built with the other test models (tests/support/build_models.py)."""
    return models_dir


@pytest.fixture(scope="session")
def qwen_reranker(rerank_models: Path):
    with Reranker(rerank_models / "tiny-qwen3-reranker-f32.gguf") as reranker:
        yield reranker


@pytest.fixture(scope="session")
def xlmr_reranker(rerank_models: Path):
    with Reranker(rerank_models / "tiny-xlmr-reranker-f32.gguf") as reranker:
        yield reranker


# ------------------------------------------------------------------ Qwen3-Reranker
@pytest.fixture(scope="session")
def qwen_reference(rerank_models: Path):
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    src = rerank_models / "tiny-qwen3-reranker"
    tok = AutoTokenizer.from_pretrained(src)
    model = Qwen3ForCausalLM.from_pretrained(src, torch_dtype=torch.float32).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")

    def score(query: str, doc: str, *, prefix: str = QWEN3_RERANK_PREFIX,
              instruction: str = QWEN3_RERANK_INSTRUCTION, swap: bool = False) -> float:
        # the model card's code: prefix and suffix tokens around the formatted middle
        middle = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
        ids = (tok.encode(prefix, add_special_tokens=False)
               + tok.encode(middle, add_special_tokens=False)
               + tok.encode(QWEN3_RERANK_SUFFIX, add_special_tokens=False))
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        pair = torch.stack([logits[no], logits[yes]])
        probs = torch.softmax(pair, dim=0)
        return float(probs[0] if swap else probs[1])

    return score


def test_qwen3_reranker_matches_transformers(qwen_reranker: Reranker, qwen_reference) -> None:
    ours = qwen_reranker.score(QUERY, DOCS).scores
    want = np.array([qwen_reference(QUERY, d) for d in DOCS])
    assert np.abs(ours - want).max() < TOL, (ours, want)
    assert np.ptp(want) > 20 * TOL  # the documents score apart: the check can fail
    # one pair at a time gives the same scores as one packed decode
    single = np.array([qwen_reranker.score(QUERY, [d]).scores[0] for d in DOCS])
    assert np.abs(single - ours).max() < 1e-5


def test_qwen3_reranker_negatives_miss_by_far(qwen_reranker: Reranker, qwen_reference) -> None:
    ours = qwen_reranker.score(QUERY, DOCS).scores
    wrong = {
        "no system prompt": [qwen_reference(QUERY, d, prefix="<|im_start|>user\n")
                             for d in DOCS],
        "another instruction": [qwen_reference(QUERY, d, instruction="Find code")
                                for d in DOCS],
        "the 'no' token": [qwen_reference(QUERY, d, swap=True) for d in DOCS],
        "query and document swapped": [qwen_reference(d, QUERY) for d in DOCS],
    }
    for name, scores in wrong.items():
        assert np.abs(ours - np.array(scores)).max() > 10 * TOL, name


def test_qwen3_user_text_never_becomes_control_tokens(qwen_reranker: Reranker) -> None:
    plain = qwen_reranker.tokenize("<|im_end|>")
    assert len(plain) > 1  # spelled out, not the control token
    assert len(qwen_reranker.tokenize("<|im_end|>", special=True)) == 1


# ------------------------------------------------------------------ XLM-R cross-encoder
@pytest.fixture(scope="session")
def xlmr_reference(rerank_models: Path):
    import torch
    from transformers import AutoTokenizer, XLMRobertaForSequenceClassification

    src = rerank_models / "tiny-xlmr-reranker"
    tok = AutoTokenizer.from_pretrained(src)
    model = XLMRobertaForSequenceClassification.from_pretrained(
        src, torch_dtype=torch.float32).eval()

    def score(query: str, doc: str, *, template: str = "pair", head: str = "full") -> float:
        if template == "pair":  # the tokenizer's own pair template
            ids = tok(query, doc)["input_ids"]
        else:  # one separator, as a BERT template would put it
            q = tok.encode(query, add_special_tokens=False)
            d = tok.encode(doc, add_special_tokens=False)
            ids = [tok.cls_token_id, *q, tok.sep_token_id, *d, tok.sep_token_id]
        with torch.no_grad():
            if head == "full":
                return float(model(torch.tensor([ids])).logits[0, 0])
            hidden = model.roberta(torch.tensor([ids])).last_hidden_state[0, 0]
            return float(model.classifier.out_proj(hidden)[0])  # no dense + tanh

    return score


def test_xlmr_reranker_matches_transformers(xlmr_reranker: Reranker, xlmr_reference) -> None:
    assert xlmr_reranker.family == "roberta"
    ours = xlmr_reranker.score(QUERY, DOCS).scores
    want = np.array([xlmr_reference(QUERY, d) for d in DOCS])
    assert np.abs(ours - want).max() < TOL_XLMR, (ours, want)
    assert np.ptp(want) > 20 * TOL_XLMR
    single = np.array([xlmr_reranker.score(QUERY, [d]).scores[0] for d in DOCS])
    assert np.abs(single - ours).max() < TOL_XLMR


def test_xlmr_reranker_negatives_miss_by_far(xlmr_reranker: Reranker, xlmr_reference) -> None:
    ours = xlmr_reranker.score(QUERY, DOCS).scores
    wrong = {
        "one separator": [xlmr_reference(QUERY, d, template="bert") for d in DOCS],
        "head without dense+tanh": [xlmr_reference(QUERY, d, head="out_proj") for d in DOCS],
        "query and document swapped": [xlmr_reference(d, QUERY) for d in DOCS],
    }
    for name, scores in wrong.items():
        assert np.abs(ours - np.array(scores)).max() > 10 * TOL_XLMR, name


def test_xlmr_pair_is_built_from_token_ids(xlmr_reranker: Reranker) -> None:
    ids, cut = xlmr_reranker.pair_tokens("a query", "a passage </s> with a separator")
    assert not cut
    q = xlmr_reranker.tokenize("a query")
    assert list(ids[:len(q) + 3]) == [xlmr_reranker._bos, *q, xlmr_reranker._sep,
                                      xlmr_reranker._sep]
    # the literal "</s>" in the passage is text, not a separator
    assert list(ids).count(xlmr_reranker._sep) == 3


# ------------------------------------------------------------------ long input, bad input
@pytest.mark.parametrize("fixture", ["qwen_reranker", "xlmr_reranker"])
def test_long_passage_is_cut_and_reported(fixture: str, request) -> None:
    reranker: Reranker = request.getfixturevalue(fixture)
    long = " ".join(["archive extract tar files"] * 2000)
    result = reranker.score(QUERY, [DOCS[0], long])
    assert result.truncated == [1]
    assert result.token_counts[1] == reranker.max_tokens
    assert np.isfinite(result.scores).all()


def test_reranker_given_as_embedding_model(rerank_models: Path) -> None:
    with pytest.raises(ModelLoadError, match="is a reranker, not an embedding model"):
        Engine(rerank_models / "tiny-xlmr-reranker-f32.gguf")
    with pytest.raises(ModelLoadError, match="is a reranker, not an embedding model"):
        Engine(rerank_models / "tiny-qwen3-reranker-f32.gguf")


def test_embedding_model_given_as_reranker(rerank_models: Path, minilm_path: Path,
                                           qwen_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"embedding model.*not a reranker"):
        Reranker(minilm_path)
    with pytest.raises(ModelLoadError, match="no yes/no head"):
        Reranker(qwen_path)


def test_reranker_gguf_without_its_head_is_refused(rerank_models: Path) -> None:
    with pytest.raises(ModelLoadError, match="no yes/no head"):
        Reranker(rerank_models / "tiny-qwen3-reranker-nohead-f32.gguf")


def test_bert_cross_encoder_without_pooler_is_refused() -> None:
    meta = {"bert.classifier.output_labels": "[LABEL_0]", "tokenizer.ggml.model": "bert"}
    assert "pooler" in head_problem("bert", True, meta, {"cls.output.weight"}, causal=False)
    assert head_problem("bert", True, {**meta, "tokenizer.ggml.model": "t5"},
                        {"cls.weight", "cls.output.weight"}, causal=False) is None


def test_best_window_picks_the_matching_lines() -> None:
    import re

    lines = [f"filler line number {i} about nothing" for i in range(200)]
    lines[150] = "extract the tar archive here"
    text = "\n".join(lines)
    window = best_window(text, {"extract", "tar", "archive"}, lambda s: len(s.split()), 40,
                         re.compile(r"\w+"))
    assert "extract the tar archive here" in window
    assert sum(len(line.split()) + 1 for line in window.split("\n")) <= 40
    assert best_window("short text", {"x"}, lambda s: 2, 40, re.compile(r"\w+")) == "short text"


@pytest.mark.parametrize("fixture", ["qwen_reranker", "xlmr_reranker"])
def test_max_doc_tokens_cuts_each_passage_to_its_first_tokens(fixture: str, request) -> None:
    """Cohere's max_tokens_per_doc: the passage keeps its first N tokens (reported cut); a
    passage within N is scored as it is."""
    reranker: Reranker = request.getfixturevalue(fixture)
    ids = reranker.tokenize(DOCS[2])
    n = len(ids) - 4
    short = "tar -xf"
    assert len(reranker.tokenize(short)) <= n
    head = reranker.detokenize(ids[:n])
    assert DOCS[2].startswith(head.strip()) and len(reranker.tokenize(head)) == n
    result = reranker.score(QUERY, [DOCS[2], short], max_doc_tokens=n)
    assert result.truncated == [0]
    whole = reranker.score(QUERY, [DOCS[2], short])
    cut = reranker.score(QUERY, [head, short])
    assert result.scores[0] == pytest.approx(cut.scores[0], abs=1e-5)
    assert result.scores[1] == pytest.approx(whole.scores[1], abs=1e-5)
    assert abs(result.scores[0] - whole.scores[0]) > 1e-4  # the cut changed what was scored
    assert result.token_counts[0] == cut.token_counts[0] < whole.token_counts[0]
    roomy = reranker.score(QUERY, [DOCS[2]], max_doc_tokens=len(ids))
    assert roomy.truncated == [] and roomy.scores[0] == pytest.approx(whole.scores[0],
                                                                       abs=1e-5)


def test_v2_rerank_applies_max_tokens_per_doc_with_a_real_reranker(
        xlmr_reranker: Reranker) -> None:
    from starlette.testclient import TestClient

    from gguf_embed.server import ServerConfig, create_app
    from gguf_embed.testing import FakeEngine

    app = create_app(FakeEngine(), ServerConfig(model_name="fake", batch_window=0),
                     xlmr_reranker)
    http = TestClient(app, base_url="http://127.0.0.1:8000")
    reply = http.post("/v2/rerank", json={"query": QUERY, "documents": DOCS[:3],
                                          "max_tokens_per_doc": 4})
    assert reply.status_code == 200, reply.text
    got = {r["index"]: r for r in reply.json()["results"]}
    expected = xlmr_reranker.score(QUERY, DOCS[:3], max_doc_tokens=4)
    whole = xlmr_reranker.score(QUERY, DOCS[:3])
    assert np.abs(expected.scores - whole.scores).max() > 1e-3
    for i in range(3):
        assert got[i]["raw_score"] == pytest.approx(float(expected.scores[i]), abs=1e-5)
        assert got[i]["truncated"] is True
