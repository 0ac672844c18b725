"""`merge`'s time and the first keyword searches after it, for this code and another checkout
side by side (issue 21: a merge that leaves no INDEX.keywords sends every one-shot search down
FTS5's slow path until the next `index` run).

    python -m scripts.bench_merge_caches --shard /tmp/search-100000-1024.db \\
        --workdir /tmp/merge-bench --before /work/main

Each code merges the shard (e.g. one of bench_scale's --keep indexes) into a new index in
``--workdir``, then answers each query in a fresh process (`Index.search(mode="keyword")`, the
search call timed, not the start-up), as a one-shot `gguf-embed search` would.  Run it under
the benchmark lock; it prints one JSON line per merge and per search."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

QUERIES = ["display the contents of a file", "list all files in the current directory",
           "show the version", "create a new file", "print the help for a command",
           "remove a directory", "set the output format"]

MERGE = r'''
import json, os, sys, time
from gguf_embed import Index
out, shard = sys.argv[1], sys.argv[2]
t = time.perf_counter()
with Index(out) as index:
    summary = index.merge_from([shard])
print(json.dumps({"merge_s": round(summary.seconds, 2),
                  "with_caches_s": round(time.perf_counter() - t, 2), "chunks": summary.chunks,
                  "keywords_file": os.path.exists(out + ".keywords"),
                  "bits_file": os.path.exists(out + ".bits")}))
'''

SEARCH = r'''
import json, sys, time
from gguf_embed import Index
with Index(sys.argv[1], readonly=True) as index:
    t = time.perf_counter()
    hits = index.search(sys.argv[2], k=10, mode="keyword")
    ms = (time.perf_counter() - t) * 1000
print(json.dumps({"ms": round(ms, 1), "top": [h.chunk_id for h in hits]}))
'''


def run(code: Path, *args: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(code)}  # cwd too: `python -c` puts it first
    done = subprocess.run([sys.executable, "-c", *args], capture_output=True, text=True,
                          env=env, cwd=code, check=True)
    return dict(json.loads(done.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parent.parent
    tops: dict[str, list[object]] = {}
    for tag, code in (("this", here), ("before", args.before)):
        out = args.workdir / f"out-{tag}.db"
        for suffix in ("", "-wal", "-shm", ".bits", ".keywords", ".lock"):
            Path(str(out) + suffix).unlink(missing_ok=True)
        print(json.dumps({"code": tag, **run(code, MERGE, str(out), str(args.shard))}),
              flush=True)
        times = []
        for query in QUERIES:
            got = run(code, SEARCH, str(out), query)
            times.append(float(str(got["ms"])))
            tops.setdefault(query, []).append(got["top"])
            print(json.dumps({"code": tag, "query": query, **got}), flush=True)
        print(json.dumps({"code": tag, "search_ms_median": statistics.median(times),
                          "min": min(times), "max": max(times)}), flush=True)
    print(json.dumps({"same_top_10": all(a == b for a, b in tops.values())}))


if __name__ == "__main__":
    main()
