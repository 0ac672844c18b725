#!/usr/bin/env python3
"""Server requests/s with and without cross-request batching, in one run, on loopback:
32 concurrent clients, each sending single-text requests (the common shape of RAG traffic).

    python -m scripts.bench_server                      # MiniLM F16, 32 clients x 40 requests
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from gguf_embed import Engine
from gguf_embed.server import ServerConfig, create_app

ROOT = Path(__file__).resolve().parent.parent


def run(engine: Engine, window: float, texts: list[str], clients: int, per_client: int) -> float:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(engine, ServerConfig(model_name="m", port=port, batch_window=window))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)

    def client(n: int) -> int:
        ok = 0
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            for j in range(per_client):
                r = http.post("/v1/embeddings", json={"input": texts[(n + j) % len(texts)]})
                ok += r.status_code == 200
        return ok

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        ok = sum(pool.map(client, range(clients)))
    seconds = time.perf_counter() - start
    server.should_exit = True
    thread.join()
    assert ok == clients * per_client, f"{clients * per_client - ok} requests failed"
    return ok / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    opts = parser.parse_args()
    pages = sorted((opts.corpus / "tldr-linux" / "pages").glob("*.md"))[:256]
    texts = [next((ln[2:] for ln in p.read_text().splitlines() if ln.startswith("- ")), p.stem)
             for p in pages]
    engine = Engine(opts.model)
    rows = [("one decode per request (--batch-window 0)", run(engine, 0.0, texts, opts.clients,
                                                               opts.requests)),
            ("cross-request batching (--batch-window 4)", run(engine, 0.004, texts,
                                                              opts.clients, opts.requests))]
    print(f"model: {opts.model.name}, {opts.clients} concurrent clients x {opts.requests} "
          f"single-text requests, loopback\n")
    print("| server | requests/s |")
    print("| --- | ---: |")
    for name, rate in rows:
        print(f"| {name} | {rate:,.1f} |")


if __name__ == "__main__":
    main()
