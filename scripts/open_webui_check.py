#!/usr/bin/env python3
"""Open WebUI end to end against `gguf-embed serve`, with the settings of
docs/integrations.md: a knowledge base gets a file (embedded through /v1/embeddings, documents
with "input_type": "document"), and a question retrieves it (the query embedded with
"input_type": "query", reranked through /v1/rerank when --reranker is given).  A small proxy
between the two records what Open WebUI sends, so the check also proves that the
`input_type` field and the rerank call really reach the server.

Open WebUI is far too heavy for the test extra (torch, sentence-transformers, ...): install it
in a virtual environment of its own and name it here.

    python -m venv /tmp/owui && /tmp/owui/bin/pip install open-webui
    python -m scripts.open_webui_check --webui /tmp/owui/bin/open-webui \\
        [--model models/all-minilm-l6-v2-f16.gguf] [--reranker models/tiny-xlmr-reranker-f32.gguf]

Both servers bind 127.0.0.1 only (with `--exposed NAME`, `serve` binds 0.0.0.0 with a key,
as in the Docker recipe) and Open WebUI runs offline (no downloads, no telemetry);
its data lives in a temporary folder.  Exit code 0 and "ok" lines when every check passes;
the servers' logs are printed otherwise.  The reranker's order is printed, not checked: the
test rerankers have random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx

ROOT = Path(__file__).resolve().parent.parent
FILE_TEXT = """# Espresso machine

Descale the espresso machine every three months with citric acid. The water tank holds
1.8 litres; the pressure should read nine bar while a shot runs.
"""
OTHER_TEXT = "# Garden\n\nWater the tomatoes in the evening, never at noon.\n"
# One chunk (CHUNK_SIZE below) of ~1,000 MiniLM tokens: past the 512 of its context, so the
# file is added only because the server truncates (`serve --truncate`).
LONG_TEXT = "# Manual\n\n" + " ".join(
    f"Step {i}: rinse the group head, wipe the steam wand and empty the drip tray."
    for i in range(1, 61)) + "\n"
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


class Recorder(BaseHTTPRequestHandler):
    """Forwards every request to the server named by `target` and records its JSON body."""

    target = ""
    seen: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    truncated: ClassVar[list[int]] = []  # per answer of /v1/embeddings: inputs marked cut

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            sent = json.loads(body) if body else {}
        except ValueError:
            sent = {}
        self.seen.append((self.path, sent if isinstance(sent, dict) else {}))
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("authorization", "content-type")}
        answer = httpx.request(self.command, self.target + self.path, content=body,
                               headers=headers, timeout=300)
        if self.path == "/v1/embeddings" and answer.status_code == 200:
            self.truncated.append(sum(bool(item.get("truncated"))
                                      for item in answer.json()["data"]))
        self.send_response(answer.status_code)
        self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webui", required=True, help="the open-webui executable")
    parser.add_argument("--model", default=str(ROOT / "models" / "all-minilm-l6-v2-f16.gguf"))
    parser.add_argument("--reranker", default=None)
    parser.add_argument("--exposed", metavar="NAME", default=None, help=(
        "the Docker recipe's server side: serve binds 0.0.0.0 with the key, and Open WebUI's "
        "requests reach it as http://NAME:PORT (e.g. host.docker.internal mapped in "
        "/etc/hosts to this machine's non-loopback address)"))
    opts = parser.parse_args()

    key = "check-" + os.urandom(8).hex()
    embed_port, webui_port = free_port(), free_port()
    Recorder.target = f"http://{opts.exposed or '127.0.0.1'}:{embed_port}"
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{proxy.server_address[1]}"
    serve_cmd = [sys.executable, "-m", "gguf_embed", "-v", "serve", "--model", opts.model,
                 "--port", str(embed_port), "--api-key", key, "--truncate"]
    if opts.exposed:
        serve_cmd += ["--host", "0.0.0.0"]
    if opts.reranker:
        serve_cmd += ["--reranker", opts.reranker]
    data = Path(tempfile.mkdtemp(prefix="owui-"))
    env = {**os.environ, "DATA_DIR": str(data), "PORT": str(webui_port), "HOST": "127.0.0.1",
           "OFFLINE_MODE": "True", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "ANONYMIZED_TELEMETRY": "False", "DO_NOT_TRACK": "True",
           "SCARF_NO_ANALYTICS": "True", "ENABLE_OLLAMA_API": "False",
           "ENABLE_OPENAI_API": "False", "RAG_EMBEDDING_MODEL_AUTO_UPDATE": "False",
           "RAG_EMBEDDING_ENGINE": "openai", "RAG_OPENAI_API_BASE_URL": f"{base}/v1",
           "RAG_OPENAI_API_KEY": key, "RAG_EMBEDDING_MODEL": "text-embedding-3-small",
           "RAG_EMBEDDING_BATCH_SIZE": "16", "RAG_EMBEDDING_PREFIX_FIELD_NAME": "input_type",
           "RAG_EMBEDDING_QUERY_PREFIX": "query", "RAG_EMBEDDING_CONTENT_PREFIX": "document",
           "CHUNK_SIZE": "6000"}
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
            wait_for(f"{Recorder.target}/health", serve, 120)
            if opts.exposed:
                peer = socket.gethostbyname(opts.exposed)
                anonymous = httpx.post(f"{Recorder.target}/v1/embeddings", timeout=30,
                                       json={"input": "x", "model": "m"})
                assert anonymous.status_code == 401, anonymous.text  # the key is required
                print(f"ok: serve on 0.0.0.0 answers http://{opts.exposed}:{embed_port} "
                      f"({peer}) only with the key")
            url = f"http://127.0.0.1:{webui_port}"
            wait_for(f"{url}/health", webui, 600)
            check(url, reranking=bool(opts.reranker))
        except BaseException:
            for name in ("serve.log", "webui.log"):
                print(f"--- {name} (last 60 lines)", file=sys.stderr)
                print("\n".join((logs / name).read_text(errors="replace").splitlines()[-60:]),
                      file=sys.stderr)
            raise
        finally:
            proxy.shutdown()
            for proc in (webui, serve):
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def sent(path: str) -> list[dict[str, Any]]:
    """The JSON bodies Open WebUI posted to `path` so far."""
    return [body for seen_path, body in Recorder.seen if seen_path == path]


def check(url: str, reranking: bool) -> None:
    with httpx.Client(base_url=url, timeout=300) as http:
        signup = http.post("/api/v1/auths/signup", json={
            "name": "check", "email": "check@example.com", "password": "check-password-1"})
        signup.raise_for_status()
        http.headers["Authorization"] = f"Bearer {signup.json()['token']}"
        files = []
        for name, text in (("espresso.md", FILE_TEXT), ("garden.md", OTHER_TEXT),
                           ("manual.md", LONG_TEXT)):
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
        documents = [b for b in sent("/v1/embeddings") if b.get("input_type") == "document"]
        assert len(documents) >= 3, Recorder.seen
        assert any(Recorder.truncated), Recorder.truncated  # manual.md's chunk was cut
        print(f"ok: Open WebUI {version(http)} added 3 files to a knowledge base; "
              f"{len(documents)} embedding requests with \"input_type\": \"document\", "
              f"{sum(Recorder.truncated)} inputs truncated to the model's context")

        found = http.post("/api/v1/retrieval/query/collection", json={
            "collection_names": [kb_id], "query": QUESTION, "k": 1, "hybrid": False})
        assert found.status_code == 200, found.text
        top = found.json()["documents"][0][0]
        assert "Descale" in top, top
        queries = [b for b in sent("/v1/embeddings") if b.get("input_type") == "query"]
        assert queries and queries[-1]["input"] in (QUESTION, [QUESTION]), Recorder.seen
        print(f"ok: vector search retrieved {top.splitlines()[0]!r} for {QUESTION!r}, "
              f"the query embedded with \"input_type\": \"query\"")
        if not reranking:
            return

        found = http.post("/api/v1/retrieval/query/collection", json={
            "collection_names": [kb_id], "query": QUESTION, "k": 2, "k_reranker": 2,
            "hybrid": True})
        assert found.status_code == 200, found.text
        docs, scores = found.json()["documents"][0], found.json()["distances"][0]
        reranks = sent("/v1/rerank")
        assert reranks and len(reranks[-1]["documents"]) == 2, Recorder.seen
        assert len(docs) == 2 and all(0.0 <= s <= 1.0 for s in scores), found.text
        order = ", ".join(f"{d.splitlines()[0]!r} {s:.3f}"
                          for d, s in zip(docs, scores, strict=True))
        print(f"ok: hybrid search reranked 2 chunks through /v1/rerank "
              f"(model {reranks[-1].get('model')!r}): {order}")


def version(http: httpx.Client) -> str:
    answer = http.get("/api/version")
    return str(answer.json().get("version")) if answer.status_code == 200 else "(version ?)"


if __name__ == "__main__":
    main()
