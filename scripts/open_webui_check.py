#!/usr/bin/env python3
"""Open WebUI end to end against `gguf-embed serve`, with the settings of
docs/integrations.md: a knowledge base gets a file (embedded through /v1/embeddings, documents
with "input_type": "document"), and a question retrieves it (the query embedded with
"input_type": "query", reranked through /v1/rerank when --reranker is given).

Open WebUI is far too heavy for the test extra (torch, sentence-transformers, ...): install it
in a virtual environment of its own and name it here.

    python -m venv /tmp/owui && /tmp/owui/bin/pip install open-webui
    python -m scripts.open_webui_check --webui /tmp/owui/bin/open-webui \\
        [--model models/all-minilm-l6-v2-f16.gguf] [--reranker models/tiny-xlmr-reranker-f32.gguf]

Both servers bind 127.0.0.1 only; Open WebUI's data lives in a temporary folder.  Exit code 0
and one "ok" line when the file is found; the servers' logs are printed otherwise.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
FILE_TEXT = """# Espresso machine

Descale the espresso machine every three months with citric acid. The water tank holds
1.8 litres; the pressure should read nine bar while a shot runs.
"""
OTHER_TEXT = "# Garden\n\nWater the tomatoes in the evening, never at noon.\n"
QUESTION = "how often should I descale the coffee machine?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webui", required=True, help="the open-webui executable")
    parser.add_argument("--model", default=str(ROOT / "models" / "all-minilm-l6-v2-f16.gguf"))
    parser.add_argument("--reranker", default=None)
    opts = parser.parse_args()

    key = "check-" + os.urandom(8).hex()
    embed_port, webui_port = free_port(), free_port()
    base = f"http://127.0.0.1:{embed_port}"
    serve_cmd = [sys.executable, "-m", "gguf_embed", "-v", "serve", "--model", opts.model,
                 "--port", str(embed_port), "--api-key", key, "--truncate"]
    if opts.reranker:
        serve_cmd += ["--reranker", opts.reranker]
    data = Path(tempfile.mkdtemp(prefix="owui-"))
    env = {**os.environ, "DATA_DIR": str(data), "PORT": str(webui_port), "HOST": "127.0.0.1",
           "OFFLINE_MODE": "True", "HF_HUB_OFFLINE": "1", "ENABLE_OLLAMA_API": "False",
           "ENABLE_OPENAI_API": "False", "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False",
           "RAG_EMBEDDING_ENGINE": "openai", "RAG_OPENAI_API_BASE_URL": f"{base}/v1",
           "RAG_OPENAI_API_KEY": key, "RAG_EMBEDDING_MODEL": "text-embedding-3-small",
           "RAG_EMBEDDING_BATCH_SIZE": "16", "RAG_EMBEDDING_PREFIX_FIELD_NAME": "input_type",
           "RAG_EMBEDDING_QUERY_PREFIX": "query", "RAG_EMBEDDING_CONTENT_PREFIX": "document"}
    if opts.reranker:
        env.update({"ENABLE_RAG_HYBRID_SEARCH": "True", "RAG_RERANKING_ENGINE": "external",
                    "RAG_EXTERNAL_RERANKER_URL": f"{base}/v1/rerank",
                    "RAG_EXTERNAL_RERANKER_API_KEY": key,
                    "RAG_RERANKING_MODEL": "BAAI/bge-reranker-v2-m3",
                    "RAG_RELEVANCE_THRESHOLD": "0.0"})
    logs = data / "logs"
    logs.mkdir()
    with open(logs / "serve.log", "wb") as serve_log, \
            open(logs / "webui.log", "wb") as webui_log:
        serve = subprocess.Popen(serve_cmd, stdout=serve_log, stderr=subprocess.STDOUT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        webui = subprocess.Popen([opts.webui, "serve", "--host", "127.0.0.1", "--port",
                                  str(webui_port)], stdout=webui_log, stderr=subprocess.STDOUT,
                                 env=env, cwd=data)
        try:
            wait_for(f"{base}/health", serve, 120)
            url = f"http://127.0.0.1:{webui_port}"
            wait_for(f"{url}/health", webui, 600)
            check(url)
        except BaseException:
            for name in ("serve.log", "webui.log"):
                print(f"--- {name} (last 60 lines)", file=sys.stderr)
                print("\n".join((logs / name).read_text(errors="replace").splitlines()[-60:]),
                      file=sys.stderr)
            raise
        finally:
            for proc in (webui, serve):
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def check(url: str) -> None:
    with httpx.Client(base_url=url, timeout=300) as http:
        signup = http.post("/api/v1/auths/signup", json={
            "name": "check", "email": "check@example.com", "password": "check-password-1"})
        signup.raise_for_status()
        http.headers["Authorization"] = f"Bearer {signup.json()['token']}"
        files = []
        for name, text in (("espresso.md", FILE_TEXT), ("garden.md", OTHER_TEXT)):
            up = http.post("/api/v1/files/", files={"file": (name, text.encode(),
                                                              "text/markdown")})
            up.raise_for_status()
            files.append(up.json()["id"])
        kb = http.post("/api/v1/knowledge/create", json={"name": "check",
                                                         "description": "gguf-embed check"})
        kb.raise_for_status()
        kb_id = kb.json()["id"]
        for file_id in files:
            added = http.post(f"/api/v1/knowledge/{kb_id}/file/add", json={"file_id": file_id})
            assert added.status_code == 200, added.text  # a 404/400 here: see serve.log
        found = http.post("/api/v1/retrieval/query/collection",
                          json={"collection_names": [kb_id], "query": QUESTION, "k": 1})
        assert found.status_code == 200, found.text
        top = found.json()["documents"][0][0]
        assert "Descale" in top, top
        print(f"ok: Open WebUI added 2 files through gguf-embed serve and retrieved "
              f"{top.splitlines()[0]!r} for {QUESTION!r}")


if __name__ == "__main__":
    main()
