"""Do two index files hold the same thing?  The same documents and chunks (path, order, lines,
text), each chunk once, and vectors within cosine 1e-5: how a `--ray` run is checked against a
local one (scripts/device/run.sh's ray stage).

    python -m scripts.compare_indexes LOCAL.db OTHER.db     # exit 1 when they differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from gguf_embed.store import Store, connect

ROWS = ("SELECT d.path, c.seq, c.start_line, c.end_line, c.text, v.embedding FROM chunks c "
        "JOIN documents d ON d.id = c.doc_id JOIN chunk_vectors v ON v.chunk_id = c.id")


def chunks(db: Path) -> dict[tuple[str, int, int, int, str], np.ndarray]:
    store = Store(connect(db, readonly=True), db)
    try:
        rows = store.conn.execute(ROWS).fetchall()
    finally:
        store.close()
    out = {(str(p), int(s), int(a), int(b), str(t)): np.frombuffer(v, dtype=np.float32)
           for p, s, a, b, t, v in rows}
    if len(out) != len(rows):
        sys.exit(f"{db}: a chunk is held twice")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("local", type=Path)
    parser.add_argument("other", type=Path)
    opts = parser.parse_args()
    a, b = chunks(opts.local), chunks(opts.other)
    missing, extra = a.keys() - b.keys(), b.keys() - a.keys()
    worst = min((float(np.dot(v, b[k])) for k, v in a.items() if k in b), default=1.0)
    print(f"chunks: {len(a)} vs {len(b)}; missing {len(missing)}, extra {len(extra)}; "
          f"lowest cosine {worst:.7f}")
    if missing or extra or worst < 1 - 1e-5:
        sys.exit(1)


if __name__ == "__main__":
    main()
