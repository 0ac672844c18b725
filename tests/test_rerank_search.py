"""Reranking in search (library, CLI, HTTP) and the reranker's bad inputs, with the tiny
random-weight rerankers of tests/test_reranker.py (their scores are meaningless, their order
is still checked against the reranker's own scores)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_embed import Index, Reranker, RerankOptions
from gguf_embed.cli import cli
from gguf_embed.testing import FakeEngine

from .test_reranker import (  # noqa: F401  (fixtures)
    qwen_reranker,
    rerank_models,
    xlmr_reranker,
)

TOPICS = ["extract a tar archive with tar -xf", "list hidden files with ls -la",
          "show disk usage with du -sh", "copy files over ssh with scp",
          "compress a folder with zip -r", "find large files with find -size",
          "kill a process by name with pkill", "watch a log file with tail -f"]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, topic in enumerate(TOPICS):
        (folder / f"page{i}.md").write_text(f"# page {i}\n\n{topic}\n\nmore about {topic}\n")
    return folder


@pytest.fixture
def fake_index(tmp_path: Path, docs: Path):
    with Index(tmp_path / "fake.db", FakeEngine()) as index:
        index.add([docs])
        yield index


def test_index_search_reranks_the_fused_candidates(fake_index: Index,
                                                   xlmr_reranker: Reranker) -> None:  # noqa: F811
    plain = fake_index.search("archive files", k=8)
    assert all(r.rerank_score is None for r in plain)
    replaced = fake_index.search("archive files", k=8, rerank=xlmr_reranker,
                                 rerank_options=RerankOptions(candidates=50, weight=1.0))
    assert {r.chunk_id for r in replaced} == {r.chunk_id for r in plain}
    scores = [r.rerank_score for r in replaced]
    assert scores == sorted(scores, reverse=True)  # weight 1: the reranker's order
    # each score is the reranker's own on that chunk (whole: it fits the window)
    texts = fake_index.store.chunk_rows([r.chunk_id for r in replaced])
    want = xlmr_reranker.score("archive files", [texts[r.chunk_id].text for r in replaced])
    assert scores == pytest.approx(want.scores.tolist(), abs=1e-3)
    kept = fake_index.search("archive files", k=8, rerank=xlmr_reranker,
                             rerank_options=RerankOptions(candidates=50, weight=0.0))
    assert [r.chunk_id for r in kept] == [r.chunk_id for r in plain]  # weight 0: fused order
    assert fake_index.last_rerank == {"candidates": len(plain), "truncated": 0,
                                      "context": xlmr_reranker.max_tokens}


def test_rerank_options_are_checked() -> None:
    from gguf_embed import InputError

    with pytest.raises(InputError):
        RerankOptions(weight=1.5)


# ------------------------------------------------------------------ CLI
@pytest.fixture
def indexed(tmp_path: Path, docs: Path, qwen_path: Path) -> tuple[Path, Path]:
    model = tmp_path / "embed.gguf"
    shutil.copy(qwen_path, model)
    db = tmp_path / "index.db"
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "-m", str(model)])
    assert result.exit_code == 0, result.output
    return db, model


def test_cli_search_rerank(indexed: tuple[Path, Path], rerank_models: Path) -> None:  # noqa: F811
    db, _ = indexed
    reranker = str(rerank_models / "tiny-xlmr-reranker-f32.gguf")
    result = CliRunner().invoke(cli, ["search", "archive files", "--db", str(db), "--json",
                                      "-k", "3", "--rerank", reranker])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and all(isinstance(r["rerank_score"], float) for r in rows)


def test_cli_rerank_before_the_query(indexed: tuple[Path, Path],
                                     rerank_models: Path,  # noqa: F811
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`search --rerank "question"`: click gives the question to --rerank; with no QUERY left
    it is the query, reranked by the default reranker (it used to be read as a model)."""
    import gguf_embed.cli._search as cli_index

    asked: list[str | None] = []

    def fake_load(model: str | None, *args: object, **kwargs: object) -> Reranker:
        asked.append(model)
        return Reranker(rerank_models / "tiny-xlmr-reranker-f32.gguf")

    monkeypatch.setattr(cli_index, "load_reranker", fake_load)
    db, _ = indexed
    result = CliRunner().invoke(cli, ["search", "--db", str(db), "--json", "-k", "3",
                                      "--rerank", "archive files"])
    assert result.exit_code == 0, result.output
    assert asked == [None]
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and all(isinstance(r["rerank_score"], float) for r in rows)
    # a value that names a model still needs a QUERY
    missing = CliRunner().invoke(cli, ["search", "--db", str(db), "--rerank",
                                       "bge-reranker-base"])
    assert missing.exit_code == 2 and "Missing argument 'QUERY'" in missing.stderr


def test_cli_rerank_on_an_index_whose_model_is_gone(indexed: tuple[Path, Path],
                                                    rerank_models: Path) -> None:  # noqa: F811
    db, model = indexed
    model.unlink()
    result = CliRunner().invoke(cli, ["search", "archive", "--db", str(db), "--rerank",
                                      str(rerank_models / "tiny-xlmr-reranker-f32.gguf")])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and str(model) in lines[0]


def test_cli_missing_reranker_is_one_line(indexed: tuple[Path, Path], tmp_path: Path) -> None:
    db, _ = indexed
    result = CliRunner().invoke(cli, ["search", "archive", "--db", str(db), "--rerank",
                                      str(tmp_path / "nope.gguf")])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0 and "nope.gguf" in result.stderr


def test_cli_swapped_models_name_both(indexed: tuple[Path, Path]) -> None:
    db, _ = indexed
    result = CliRunner().invoke(cli, ["search", "archive", "--db", str(db), "-m",
                                      "qwen3-reranker-0.6b", "--rerank",
                                      "qwen3-embedding-0.6b", "--offline"])
    assert result.exit_code == 1
    assert "qwen3-reranker-0.6b is a reranker" in result.stderr
    assert "qwen3-embedding-0.6b is an embedding model" in result.stderr


def test_cli_reranker_file_as_embedding_model(tmp_path: Path, docs: Path,
                                              rerank_models: Path) -> None:  # noqa: F811
    model = rerank_models / "tiny-xlmr-reranker-f32.gguf"
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(tmp_path / "x.db"),
                                      "-m", str(model)])
    assert result.exit_code == 1
    assert "is a reranker, not an embedding model" in result.stderr and str(model) in \
        result.stderr


def test_cli_embedding_model_as_reranker(indexed: tuple[Path, Path], qwen_path: Path,
                                         minilm_path: Path) -> None:
    db, _ = indexed
    result = CliRunner().invoke(cli, ["search", "archive", "--db", str(db), "--rerank",
                                      str(minilm_path)])
    assert result.exit_code == 1
    assert "embedding model" in result.stderr and "not a reranker" in result.stderr


def test_doctor_refuses_a_reranker_without_its_head(rerank_models: Path) -> None:  # noqa: F811
    bad = CliRunner().invoke(cli, ["doctor", "-m", str(
        rerank_models / "tiny-qwen3-reranker-nohead-f32.gguf")])
    assert bad.exit_code == 1 and "no yes/no head" in bad.stdout
    good = CliRunner().invoke(cli, ["doctor", "-m", str(
        rerank_models / "tiny-xlmr-reranker-f32.gguf"), "--json"])
    assert good.exit_code == 0, good.output
    report = json.loads(good.stdout)
    assert report["self_test"]["ok"] and report["reranker"]["format"] == "roberta"


# ------------------------------------------------------------------ HTTP
@pytest.fixture
def http(fake_index: Index, xlmr_reranker: Reranker):  # noqa: F811
    from starlette.testclient import TestClient

    from gguf_embed.server import ServerConfig, create_app

    config = ServerConfig(model_name="fake", index_path=str(fake_index.path), batch_window=0,
                          host="testserver")
    with TestClient(create_app(fake_index.engine, config, xlmr_reranker)) as client:
        yield client


def test_http_rerank_like_llama_server(http, xlmr_reranker: Reranker) -> None:  # noqa: F811
    docs = ["tar -xf archive.tar", "ls -la", {"text": "du -sh"}]
    reply = http.post("/v1/rerank", json={"query": "extract archive", "documents": docs,
                                          "top_n": 2, "return_documents": True})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    want = xlmr_reranker.score("extract archive", ["tar -xf archive.tar", "ls -la", "du -sh"])
    order = sorted(range(3), key=lambda i: -want.scores[i])[:2]
    assert [r["index"] for r in body["results"]] == order
    assert [r["raw_score"] for r in body["results"]] == pytest.approx(
        [float(want.scores[i]) for i in order], abs=1e-5)
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(  # a logit
        [1 / (1 + np.exp(-float(want.scores[i]))) for i in order], abs=1e-5)
    assert "document" in body["results"][0] and body["usage"]["total_tokens"] > 0
    for alias in ("/rerank", "/v1/reranking", "/reranking"):  # llama-server answers all four
        again = http.post(alias, json={"query": "extract archive", "documents": docs,
                                       "top_n": 2, "return_documents": True})
        assert again.status_code == 200 and again.json()["results"] == body["results"]


def test_relevance_scores_by_reranker_kind(xlmr_reranker: Reranker,  # noqa: F811
                                           qwen_reranker: Reranker) -> None:  # noqa: F811
    """Open WebUI and Cohere clients compare relevance_score with a 0..1 threshold: a
    cross-encoder's logit goes through the sigmoid, Qwen3-Reranker's P(yes) is one already."""
    assert xlmr_reranker.score_kind == "logit" and qwen_reranker.score_kind == "probability"
    raw = qwen_reranker.score("extract archive", ["tar -xf a.tar", "ls"]).scores
    assert ((raw >= 0) & (raw <= 1)).all()
    np.testing.assert_array_equal(qwen_reranker.relevance(raw), raw)
    logits = xlmr_reranker.score("extract archive", ["tar -xf a.tar", "ls"]).scores
    np.testing.assert_allclose(xlmr_reranker.relevance(logits), 1 / (1 + np.exp(-logits)),
                               atol=1e-6)


@pytest.mark.parametrize("payload, param", [
    ({"query": "", "documents": ["a"]}, "query"),
    ({"query": "q", "documents": []}, "documents"),
    ({"query": "q", "documents": [3]}, "documents"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
])
def test_http_rerank_bad_requests(http, payload: dict, param: str) -> None:
    reply = http.post("/v1/rerank", json=payload)
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param


def test_http_rerank_model_name_and_long_document(http, xlmr_reranker: Reranker) -> None:  # noqa: F811
    assert http.post("/v1/rerank", json={"model": "other", "query": "q",  # as llama-server
                                         "documents": ["a"]}).status_code == 200
    long = "archive " * 5000
    reply = http.post("/v1/rerank", json={"model": xlmr_reranker.path.name, "query": "q",
                                          "documents": ["a", long]})
    assert reply.status_code == 200
    cut = [r for r in reply.json()["results"] if r.get("truncated")]
    assert [r["index"] for r in cut] == [1]


def test_http_search_uses_the_reranker(http) -> None:
    rows = http.post("/v1/search", json={"query": "archive files", "k": 3}).json()["data"]
    assert rows and all(r["rerank_score"] is not None for r in rows)
    rows = http.post("/v1/search", json={"query": "archive files", "k": 3,
                                         "rerank": False}).json()["data"]
    assert all(r["rerank_score"] is None for r in rows)
