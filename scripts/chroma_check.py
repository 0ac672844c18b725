#!/usr/bin/env python3
"""The Chroma recipes of docs/integrations.md, run against `serve` on 127.0.0.1: chromadb's
``OpenAIEmbeddingFunction`` (its default model name ``text-embedding-ada-002``) and
LangChain's ``Chroma`` store fed by ``RecursiveCharacterTextSplitter``, each checked against
the engine's own vectors and a query.

chromadb is not in the ``test`` extra (about 500 MB with onnxruntime and grpc, ~2 minutes to
install here), so the suite does not run this; install it beside the project, in a throwaway
folder if you like:

    pip install --target /tmp/chroma chromadb && pip install --target /tmp/chroma --no-deps \\
        langchain-chroma
    PYTHONPATH=/tmp/chroma:. python -m scripts.chroma_check [--model FILE.gguf]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from gguf_embed import Engine
from scripts.bench_server import start

ROOT = Path(__file__).resolve().parent.parent
TEXTS = ["tar -xf archive.tar extracts an archive", "ls -la lists every file, hidden too",
         "du -sh shows the size of a folder", "Grüße aus Köln"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    opts = parser.parse_args()
    import chromadb
    from chromadb.utils.embedding_functions import OpenAIEmbeddingFunction

    engine = Engine(opts.model)
    _, server, port = start(engine, "all-minilm-l6-v2")
    base = f"http://127.0.0.1:{port}/v1"
    want = engine.embed(TEXTS)

    function = OpenAIEmbeddingFunction(api_key="unused", api_base=base)  # ada-002 by default
    got = np.array(function(TEXTS), dtype=np.float32)
    worst = float((got * want).sum(axis=1).min())
    assert worst >= 0.9999, worst
    client = chromadb.EphemeralClient()
    notes = client.create_collection("notes", embedding_function=function)
    notes.add(ids=[str(i) for i in range(len(TEXTS))], documents=TEXTS)
    top = notes.query(query_texts=["how big is this folder?"], n_results=1)["documents"][0][0]
    assert "du -sh" in top, top
    print(f"chromadb {chromadb.__version__} OpenAIEmbeddingFunction: ok (min cosine {worst:.6f},"
          f" query finds {top!r})")

    try:
        from langchain_chroma import Chroma
    except ImportError:
        print("langchain-chroma: not installed, skipped")
    else:
        from langchain_openai import OpenAIEmbeddings
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        embeddings = OpenAIEmbeddings(model="text-embedding-3-small", base_url=base,
                                      api_key="unused", check_embedding_ctx_length=False)
        splitter = RecursiveCharacterTextSplitter(chunk_size=60, chunk_overlap=10)
        chunks = splitter.create_documents(["\n\n".join(TEXTS)])
        store = Chroma.from_documents(chunks, embeddings, collection_name="tutorial")
        hit = store.similarity_search("how big is this folder?", k=1)[0].page_content
        assert "du -sh" in hit, hit
        print(f"langchain-chroma Chroma + RecursiveCharacterTextSplitter: ok ({len(chunks)} "
              f"chunks, query finds {hit!r})")
    server.should_exit = True  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
