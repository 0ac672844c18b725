#!/usr/bin/env python3
"""One-shot search cost (issue 21): fresh processes, wall and CPU time, for this checkout and
``--before DIR`` (another checkout, e.g. main before the change), interleaved run by run.

  * the floor: ``python -c pass`` and ``python -c "import numpy"``
  * a library one-shot: import, open the index, load its ``.bits`` file, one
    ``Index.search(mode="vector")`` with a given query vector (no model), results with snippets
  * ``gguf-embed search --mode keyword`` on the same index (no model)
  * ``gguf-embed search --mode vector``, and hybrid (the default), with a real model
    (``--model-db DB --model PATH``):
    llama.cpp, the model and the query's embedding included
  * the same through a running ``gguf-embed serve`` of that model (``--embed-url URL``): the
    query embedded by the warm server, as with a model too large to load per search

    python -m scripts.bench_oneshot --db /tmp/issue21/search-1000000-1024.db \\
        --model-db /tmp/minilm.db --model models/all-minilm-l6-v2-f16.gguf --before /work/main
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = """
import sys
import numpy as np
from gguf_embed.index import Index
from gguf_embed.testing import FakeEngine
q = np.load(sys.argv[2])
class Given(FakeEngine):
    def encode(self, texts, **options):
        out = super().encode(texts, **options)
        out.vectors[:] = q
        return out
with Index(sys.argv[1], Given(dims=len(q), max_tokens=8192, name="bench"), readonly=True) as i:
    hits = i.search("x", k=10, mode="vector")
print(len(hits))
"""
QUERY = "display the contents of a file"


BYTECODE = Path(tempfile.gettempdir()) / "gguf-embed-bench-oneshot-pyc"


def once(argv: list[str], code: Path, bytecode: bool = True) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one fresh process running ``argv`` (with
    OpenBLAS on one thread, as the CLI sets it, for either checkout and the floor).

    ``bytecode``: each checkout's compiled modules are kept in a folder of their own outside
    it (``PYTHONPYCACHEPREFIX``), as an installed package has them; without it, with
    ``PYTHONDONTWRITEBYTECODE`` set (as on some hosts), every run compiles gguf_embed's
    sources again (~60 ms of a one-shot search)."""
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    if bytecode:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(BYTECODE / str(code.resolve()).strip("/")
                                         .replace("/", "_"))
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["OPENBLAS_NUM_THREADS"] = "1"  # as the CLI sets it (unless the user chose)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    # cwd: not a checkout (``-c`` and ``-m`` put the working folder before PYTHONPATH)
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, cwd="/")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True,
                        help="a bench_scale index with its .bits file and DB.query.npy")
    parser.add_argument("--model-db", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--embed-url", default=None,
                        help="a running `gguf-embed serve` of --model-db's model: also time "
                             "searches that embed the query there (--embed-url)")
    parser.add_argument("--before", type=Path, default=None, help="another checkout to compare")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-bytecode", action="store_true",
                        help="compile gguf_embed's sources in every run (PYTHONDONTWRITEBYTECODE)")
    opts = parser.parse_args()
    py = sys.executable
    qfile = opts.db.with_suffix(".query.npy")
    cases: list[tuple[str, list[str]]] = [
        ("`python -c pass`", [py, "-c", "pass"]),
        ("`python -c 'import numpy'`, OpenBLAS 1 thread", [py, "-c", "import numpy"]),
        (f"library: `Index.search(mode=vector)`, query vector given, OpenBLAS 1 thread "
         f"({opts.db.name})",
         [py, "-c", LIBRARY, str(opts.db), str(qfile)]),
        (f"CLI: `gguf-embed search --mode keyword` ({opts.db.name})",
         [py, "-m", "gguf_embed", "search", QUERY, "--db", str(opts.db), "--mode", "keyword"]),
    ]
    if opts.model_db and opts.model:
        cases.append((f"CLI: `gguf-embed search --mode vector -m {opts.model.name}` "
                      f"({opts.model_db.name})",
                      [py, "-m", "gguf_embed", "search", QUERY, "--db", str(opts.model_db),
                       "--mode", "vector", "-m", str(opts.model.resolve())]))
        cases.append((f"CLI: `gguf-embed search -m {opts.model.name}` (hybrid, the default) "
                      f"({opts.model_db.name})",
                      [py, "-m", "gguf_embed", "search", QUERY, "--db", str(opts.model_db),
                       "-m", str(opts.model.resolve())]))
    if opts.model_db and opts.embed_url:
        for mode in ("vector", "hybrid"):
            cases.append((f"CLI: `gguf-embed search --mode {mode} --embed-url` (a warm `serve`) "
                          f"({opts.model_db.name})",
                          [py, "-m", "gguf_embed", "search", QUERY, "--db", str(opts.model_db),
                           "--mode", mode, "--embed-url", opts.embed_url]))
    codes = [("this branch", ROOT)] + ([("before", opts.before)] if opts.before else [])
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {opts.runs} runs "
          f"each, interleaved; median (min-max); "
          f"{'sources compiled every run' if opts.no_bytecode else 'bytecode kept'}\n")
    print("| case | code | wall ms | CPU ms |")
    print("| --- | --- | ---: | ---: |")
    for label, argv in cases:
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in codes}
        for _, code in codes:  # the files into the OS cache, the bytecode written
            once(argv, code, not opts.no_bytecode)
        for _ in range(opts.runs):
            for name, code in codes:
                runs[name].append(once(argv, code, not opts.no_bytecode))
        for name, _ in codes:
            wall = np.array([w for w, _ in runs[name]]) * 1000
            cpu = np.array([c for _, c in runs[name]]) * 1000
            print(f"| {label} | {name} | {np.median(wall):.0f} ({wall.min():.0f}-"
                  f"{wall.max():.0f}) | {np.median(cpu):.0f} |", flush=True)
            if label.startswith("`python"):
                break  # the same for both
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
