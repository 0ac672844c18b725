"""The public surface: exactly these names, each importable; the test engine needs no llama.cpp."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import gguf_embed
from gguf_embed.protocol import EmbeddingEngine, Prepared
from gguf_embed.testing import FakeEngine

EXPECTED = [
    "CATALOG", "ChunkSettings", "ClusterError", "DEFAULT_MODEL", "DEFAULT_RERANKER",
    "EmbeddingEngine", "Embeddings", "Engine", "EngineError", "EngineOptions", "EngineUnavailable",
    "Executor",
    "GgufEmbedError", "IdleEngine", "Index", "IndexBusy", "IndexFileError", "IndexMismatch",
    "IndexSummary", "InputError", "InputTooLong", "InvalidDimensions", "ModelError",
    "ModelLoadError", "ModelNotFound", "ModelSpec", "NonFiniteVectors", "PathError",
    "Prepared", "Progress", "QueryTruncated", "RayExecutor", "RemoteEngine", "RerankOptions",
    "RerankScores", "Reranker", "ResolvedModel", "SearchResult", "__version__", "resolve_model",
]


def test_all_is_pinned() -> None:
    assert sorted(gguf_embed.__all__) == sorted(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(gguf_embed, name) is not None


def test_index_errors_share_one_base_that_is_not_the_builtin() -> None:
    assert issubclass(gguf_embed.IndexMismatch, gguf_embed.IndexFileError)
    assert issubclass(gguf_embed.IndexBusy, gguf_embed.IndexFileError)
    assert not issubclass(gguf_embed.IndexFileError, IndexError)
    assert not hasattr(gguf_embed.errors, "IndexError_")


def test_testing_does_not_load_llama_cpp() -> None:
    code = ("import sys, gguf_embed.testing, gguf_embed.index; "
            "e = gguf_embed.testing.FakeEngine(); e.embed('x'); "
            "print('llama_cpp' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_fake_engine_prepares_then_embeds_like_encode() -> None:
    engine: EmbeddingEngine = FakeEngine(dims=16, max_tokens=4)
    prepared = engine.prepare(["one two", "a b c d e f"], truncate=True)
    assert isinstance(prepared, Prepared) and prepared.truncated == [1]
    assert [len(s) for s in prepared.sequences] == [4, 4]
    direct = engine.encode(["one two", "a b c d e f"], truncate=True)
    joined = engine.embed_prepared(prepared)
    np.testing.assert_array_equal(joined.vectors, direct.vectors)
    assert joined.truncated == direct.truncated == [1]
    assert engine.fingerprint == "fake-16"


def test_remote_engine_loads_neither_llama_cpp_nor_httpx_on_import() -> None:
    code = ("import sys, gguf_embed; gguf_embed.RemoteEngine; "
            "print('llama_cpp' in sys.modules, 'httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False False"


def test_remote_engine_without_httpx_says_what_to_install() -> None:
    code = ("import sys; sys.modules['httpx'] = None\n"
            "from gguf_embed import RemoteEngine, EngineError\n"
            "try:\n    RemoteEngine('http://127.0.0.1:9')\n"
            "except EngineError as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert 'pip install "gguf-embed[remote]"' in out.stdout
