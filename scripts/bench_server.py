#!/usr/bin/env python3
"""Server requests/s with and without cross-request batching, in one run, on loopback:
32 concurrent clients, each sending single-text requests (the common shape of RAG traffic).
With --fairness: a 1-input request's latency while one 2,048-input request is in flight,
against its idle latency, in the same run for three schedules: the large request in pieces
with small requests in the side lane beside them (now), in pieces with small requests
between them (no side lane), and embedded whole in one engine call (before either).

    python -m scripts.bench_server                      # MiniLM F16, 32 clients x 40 requests
    python -m scripts.bench_server --fairness           # 2,048 inputs of 100 words in flight
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


def start(engine: Engine, model_name: str = "m") -> tuple[object, object, int]:
    """``serve``'s app for ``engine`` in a thread on a free loopback port: (app, server, port)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(engine, ServerConfig(model_name=model_name, port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return app, server, port


SCHEDULES = ("side", "pieces", "whole")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def fairness(engine: Engine, big: list[str], small: list[str], schedule: str,
             idle_n: int) -> dict[str, float]:
    """Idle latency of 1-input requests, then their latency with `big` in flight."""
    app, server, port = start(engine)
    if schedule == "whole":  # the first schedule: a request's inputs in one engine call
        app.state.batcher.share_tokens = 10**9  # type: ignore[attr-defined]
    if schedule == "pieces":  # small requests between the pieces, no side lane
        app.state.batcher.side_lane = False  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}/v1/embeddings"
    with httpx.Client(timeout=900) as http:
        def one(i: int) -> float:
            t0 = time.perf_counter()
            r = http.post(url, json={"input": small[i % len(small)], "encoding_format": "float"})
            assert r.status_code == 200, r.text
            return time.perf_counter() - t0

        for i in range(20):
            one(i)  # warm up
        idle = [one(i) for i in range(idle_n)]
        done = threading.Event()
        took: list[float] = []

        def large() -> None:
            t0 = time.perf_counter()
            with httpx.Client(timeout=900) as other:
                r = other.post(url, json={"input": big, "encoding_format": "base64"})
            assert r.status_code == 200, r.text
            took.append(time.perf_counter() - t0)
            done.set()

        batcher = app.state.batcher  # type: ignore[attr-defined]
        before = batcher.decodes
        thread = threading.Thread(target=large)
        thread.start()
        while batcher.decodes == before:  # its first piece is in the engine
            time.sleep(0.005)
        busy = []
        while not done.is_set():
            busy.append(one(len(busy)))
        thread.join()
    server.should_exit = True  # type: ignore[attr-defined]
    return {"idle_p50": sorted(idle)[len(idle) // 2], "idle_p95": p95(idle),
            "busy_p50": sorted(busy)[len(busy) // 2], "busy_p95": p95(busy),
            "busy_n": len(busy), "busy_max": max(busy), "big_s": took[0]}


def run_fairness(engine: Engine, texts: list[str], inputs: int, words: int,
                 idle_n: int, schedules: tuple[str, ...] = SCHEDULES) -> None:
    vocab = " ".join(texts).split()
    big = [" ".join(vocab[(i * 37 + j) % len(vocab)] for j in range(words))
           for i in range(inputs)]
    tokens = sum(engine.count_tokens(big[:64])) * inputs // 64
    engine.embed(big[:16])  # every weight page read in before the first idle request
    print(f"model: {engine.path.name}; one request of {inputs:,} inputs of {words} words "
          f"(~{tokens:,} tokens) in flight; 1-input requests sent one after another\n")
    print("| schedule | idle p50 | idle p95 | in-flight p50 | in-flight p95 | p95 ratio | "
          "1-input requests served meanwhile | large request |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, schedule in (("pieces + side lane (now)", "side"),
                           ("pieces, small requests between them (no side lane)", "pieces"),
                           ("whole request in one engine call (first)", "whole")):
        if schedule not in schedules or (schedule == "side" and not engine.side_threads):
            continue  # not asked for; or one thread: no side lane
        r = fairness(engine, big, texts, schedule, idle_n)
        print(f"| {name} | {r['idle_p50'] * 1000:.0f} ms | {r['idle_p95'] * 1000:.0f} ms | "
              f"{r['busy_p50'] * 1000:.0f} ms | {r['busy_p95'] * 1000:.0f} ms | "
              f"{r['busy_p95'] / r['idle_p95']:.1f}x | {r['busy_n']} | {r['big_s']:.1f} s |",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=40, help="per client")
    parser.add_argument("--fairness", action="store_true",
                        help="latency of small requests beside one large request")
    parser.add_argument("--big-inputs", type=int, default=2048)
    parser.add_argument("--words", type=int, default=100, help="per input of the large one")
    parser.add_argument("--idle", type=int, default=100, help="idle 1-input requests timed")
    parser.add_argument("--schedules", default=",".join(SCHEDULES),
                        help="with --fairness: which of side,pieces,whole to run")
    opts = parser.parse_args()
    pages = sorted((opts.corpus / "tldr-linux" / "pages").glob("*.md"))[:256]
    texts = [next((ln[2:] for ln in p.read_text().splitlines() if ln.startswith("- ")), p.stem)
             for p in pages]
    engine = Engine(opts.model)
    if opts.fairness:
        run_fairness(engine, texts, opts.big_inputs, opts.words, opts.idle,
                     tuple(opts.schedules.split(",")))
        return
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
