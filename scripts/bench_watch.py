"""Watch mode: save → searchable latency, and memory over a long session.

    python -m scripts.bench_watch [--corpus DIR] [--model GGUF] [--latency 40] [--edits 1000]
    python -m scripts.bench_watch --latency 3 --peer 1 --edits 20   # a quick check

Copies the tldr-linux pages of --corpus (default tests/data: all 2,030) to a temporary folder
and runs a real `gguf-embed watch` on it.  Then:

1. latency: one page at a time gets a new line with a unique word; the clock runs from the
   write until a reader's FTS query finds the word (the batch is committed: its vectors went in
   with the same transaction), polled every 10 ms.  The peer is what one does without watch:
   re-running `gguf-embed index` on the folder after the save (model load + walk + embed).
2. memory: 1,000 edits at a steady pace across random pages (append, rewrite, atomic save by
   temp file and rename), the watcher's RSS sampled every 0.5 s.

Prints a Markdown report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import apsw

ROOT = Path(__file__).resolve().parent.parent
MAIN = "from gguf_embed.cli import main; import sys; sys.argv[0] = 'gguf-embed'; main()"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def found(db: Path, word: str) -> bool:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT 1 FROM fts_chunks WHERE fts_chunks MATCH ? LIMIT 1",
                            (f'"{word}"',)).fetchone() is not None
    finally:
        conn.close()


def wait_found(db: Path, word: str, timeout: float = 120.0) -> float:
    start = time.perf_counter()
    while not found(db, word):
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"{word} never became searchable")
        time.sleep(0.01)
    return time.perf_counter()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", type=Path, default=ROOT / "tests" / "data",
                        help="a folder with tldr-linux/pages (default: tests/data)")
    parser.add_argument("--model", type=Path,
                        default=ROOT / "models" / "all-minilm-l6-v2-f16.gguf")
    parser.add_argument("--latency", type=int, default=40, help="timed saves")
    parser.add_argument("--peer", type=int, default=5, help="timed `index` re-runs")
    parser.add_argument("--edits", type=int, default=1000)
    parser.add_argument("--pace", type=float, default=0.05, help="seconds between edits")
    args = parser.parse_args()
    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="bench-watch-"))
    docs = work / "pages"
    shutil.copytree(args.corpus / "tldr-linux" / "pages", docs)
    for path in [docs, *docs.rglob("*")]:  # the corpus may be read-only: the copy is not
        path.chmod(0o755 if path.is_dir() else 0o644)
    pages = sorted(docs.rglob("*.md"))
    db = work / "index.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", MAIN, "index", str(docs), "--db", str(db), "-m",
                    str(args.model)], env=env, check=True, capture_output=True)
    first_index = time.perf_counter() - t0

    peer = []
    for i in range(args.peer):
        word = f"zqxpeer{i}marker"
        page = rng.choice(pages)
        with page.open("a") as f:
            f.write(f"\n- A note: {word}\n")
        saved = time.perf_counter()
        subprocess.run([sys.executable, "-c", MAIN, "index", str(docs), "--db", str(db), "-m",
                        str(args.model)], env=env, check=True, capture_output=True)
        peer.append(time.perf_counter() - saved)
        assert found(db, word)

    proc = subprocess.Popen([sys.executable, "-c", MAIN, "watch", str(docs), "--db", str(db),
                             "-m", str(args.model), "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    events: list[dict] = []
    reader = threading.Thread(target=lambda: [events.append(json.loads(line))
                                              for line in proc.stdout], daemon=True)
    reader.start()
    t0 = time.perf_counter()
    while not events:
        time.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit("the watcher exited")
    catch_up = events[0]
    print(f"Run: {len(pages)} pages, model {args.model.name}, first `index` {first_index:.0f} s, "
          f"watch catch-up {catch_up['seconds']:.1f} s (wall {time.perf_counter() - t0:.1f} s), "
          f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f}\n")

    latencies = []
    for i in range(args.latency):
        word = f"zqxlatency{i}marker"
        page = rng.choice(pages)
        with page.open("a") as f:
            f.write(f"\n- A note: {word}\n")
        saved = time.perf_counter()
        latencies.append(wait_found(db, word) - saved)
        time.sleep(0.3)

    batches_before = len(events)
    samples: list[tuple[int, float]] = [(0, rss_mb(proc.pid))]
    stop = threading.Event()
    done = [0]

    def sample() -> None:
        while not stop.is_set():
            samples.append((done[0], rss_mb(proc.pid)))
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    for i in range(args.edits):
        page = rng.choice(pages)
        kind = i % 3
        if kind == 0:
            with page.open("a") as f:
                f.write(f"\n- Edit {i}: zqxedit{i}marker\n")
        elif kind == 1:
            text = page.read_text()
            page.write_text(text.replace("\n\n", f"\n\nzqxedit{i}marker ", 1))
        else:
            tmp = page.with_name(f".{page.name}.tmp")
            tmp.write_text(page.read_text() + f"\nzqxedit{i}marker\n")
            os.replace(tmp, page)
        done[0] = i + 1
        time.sleep(args.pace)
    wait_found(db, f"zqxedit{args.edits - 1}marker", timeout=600)
    edits_s = time.perf_counter() - start
    time.sleep(1.0)
    stop.set()
    sampler.join()
    proc.terminate()
    proc.wait(timeout=60)
    batches = len(events) - batches_before

    def at(n: int) -> float:
        return max(r for d, r in samples if d <= n)

    print("| measure | p50 | p95 | max |\n| --- | --- | --- | --- |")
    print(f"| `watch`: save → searchable ({len(latencies)} saves) | "
          f"{statistics.median(latencies):.2f} s | {pct(latencies, 0.95):.2f} s | "
          f"{max(latencies):.2f} s |")
    print(f"| peer: save → `gguf-embed index` re-run done ({len(peer)} saves) | "
          f"{statistics.median(peer):.2f} s | {pct(peer, 0.95):.2f} s | {max(peer):.2f} s |")
    print()
    print(f"{args.edits} edits (append, rewrite, atomic save; one every {args.pace * 1000:.0f} "
          f"ms) in {edits_s:.0f} s, applied in {batches} batches.")
    print()
    print("| edits done | 0 | 250 | 500 | 750 | 1000 | max |\n| --- | --- | --- | --- | --- | "
          "--- | --- |")
    marks = [0, args.edits // 4, args.edits // 2, 3 * args.edits // 4, args.edits]
    print("| watcher RSS (MB) | " + " | ".join(f"{at(n):.0f}" for n in marks) +
          f" | {max(r for _, r in samples):.0f} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
