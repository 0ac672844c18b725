#!/usr/bin/env python3
"""Indexing through ``--embed-url`` beside a local engine, in one process on one machine:
``gguf-embed serve``'s app in a thread on 127.0.0.1, the same model, the same files.

    python -m scripts.bench_remote                                  # MiniLM, 200 tldr pages
    python -m scripts.bench_remote --model models/tiny-qwen3-f32.gguf --files 50

Both runs go twice in turn (remote, local, remote, local) and the second of each is printed
(the first pays the warm-up); plus the HTTP requests the remote engine made.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gguf_embed import Engine, Index, RemoteEngine
from gguf_embed.server import ServerConfig, create_app

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "all-minilm-l6-v2-f16.gguf"))
    parser.add_argument("--pages", default=str(ROOT / "tests/data/tldr-linux/pages"))
    parser.add_argument("--files", type=int, default=200)
    args = parser.parse_args()
    import uvicorn

    tmp = Path(tempfile.mkdtemp())
    docs = tmp / "docs"
    docs.mkdir()
    for page in sorted(Path(args.pages).glob("*.md"))[: args.files]:
        shutil.copy(page, docs / page.name)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    engine = Engine(args.model)
    app = create_app(engine, ServerConfig(model_name="bench", port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    requests: dict[str, int] = {}

    def fresh_remote() -> RemoteEngine:  # a new one each run: its token-count cache is empty
        remote = RemoteEngine(f"http://127.0.0.1:{port}")
        send = remote._json

        def counted(method: str, path: str, body: Any, **kw: Any) -> Any:
            requests[path] = requests.get(path, 0) + 1
            return send(method, path, body, **kw)

        remote._json = counted  # type: ignore[method-assign]
        return remote

    rows = []
    for round_ in (1, 2):
        for name in ("remote", "local"):
            eng: Any = fresh_remote() if name == "remote" else engine
            requests.clear()
            db = tmp / f"{name}{round_}.db"
            start = time.perf_counter()
            with Index(db, eng) as index:
                summary = index.add([docs])
            seconds = time.perf_counter() - start
            if name == "remote":
                eng.close()
            if round_ == 2:
                made = ", ".join(f"{n} {p}" for p, n in requests.items()) if name == "remote" \
                    else "-"
                rows.append(f"| {name} | {seconds:.1f} | {summary.chunks} | "
                            f"{summary.tokens_embedded:,} | {made} |")
    server.should_exit = True
    thread.join(timeout=10)
    shutil.rmtree(tmp)
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs\n")
    print("| run | seconds | chunks | tokens | HTTP requests |\n| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
