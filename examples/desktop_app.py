#!/usr/bin/env python3
"""gguf-embed inside an app: a worker thread indexes a folder (progress, cancel) while the
"UI" thread searches the same index, sharing one engine.  No GUI toolkit needed: the UI loop
here is a plain loop that a Qt/Tk/GTK timer or event handler would run instead.

    python examples/desktop_app.py ~/notes "how do I rotate logs?"
    python examples/desktop_app.py ~/notes "query" --model all-minilm-l6-v2 --cancel-after 1

See docs/embedding-in-an-app.md.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import tempfile
import threading
from pathlib import Path

import llama_cpp

from gguf_embed import Engine, Index, IndexSummary, Progress, resolve_model


def pick_model() -> str:
    """A catalog model that suits this machine: the memory there is and whether llama.cpp
    can offload to a GPU."""
    ram_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    if llama_cpp.llama_supports_gpu_offload() or ram_gb >= 16:
        return "qwen3-embedding-4b"  # ~2.5 GB, best results
    if ram_gb >= 4:
        return "qwen3-embedding-0.6b"  # ~0.6 GB, multilingual, long context
    return "all-minilm-l6-v2"  # ~25 MB, English, 512-token context


class Worker(threading.Thread):
    """Runs Index.add in the background; reports progress and its summary on a queue."""

    def __init__(self, db: Path, engine: Engine, folder: Path, events: queue.Queue) -> None:
        super().__init__(name="indexer", daemon=True)
        self.db, self.engine, self.folder, self.events = db, engine, folder, events
        self.cancel = threading.Event()  # set it from the UI thread to stop after a batch

    def run(self) -> None:
        try:
            with Index(self.db, self.engine) as index:  # this thread's own Index
                summary = index.add([self.folder], cancel=self.cancel,
                                    progress=lambda p: self.events.put(p))
            self.events.put(summary)
        except Exception as exc:  # hand every failure to the UI; never die silently
            self.events.put(exc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("query")
    parser.add_argument("--model", default=None,
                        help="A .gguf path or catalog name [default: chosen by hardware].")
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--cancel-after", type=int, default=None, metavar="BATCHES",
                        help="Press 'cancel' after this many progress reports.")
    args = parser.parse_args()

    model = args.model or pick_model()
    path = Path(model) if model.endswith(".gguf") else resolve_model(model)
    db = args.db or Path(tempfile.mkdtemp()) / "app.db"
    with Engine(path) as engine:  # one engine per process, shared by every thread
        Index(db, engine).close()  # create the file, so the UI can open it read-only
        events: queue.Queue = queue.Queue()
        worker = Worker(db, engine, args.folder, events)
        worker.start()
        reports = 0
        with Index(db, engine, readonly=True) as ui_index:  # the UI thread's own Index
            while True:
                event = events.get()
                if isinstance(event, Progress):
                    reports += 1
                    hits = ui_index.search(args.query, k=1)  # searches stay fast meanwhile
                    best = hits[0].path if hits else "-"
                    print(f"progress: {event.files_done}/{event.files_total} files, "
                          f"{event.chunks} chunks; best so far: {best}", flush=True)
                    if args.cancel_after is not None and reports >= args.cancel_after:
                        worker.cancel.set()
                elif isinstance(event, IndexSummary):
                    state = "cancelled" if event.cancelled else "done"
                    print(f"{state}: {event.added} added, {event.updated} updated, "
                          f"{event.unchanged} unchanged")
                    break
                else:
                    print(f"error: {event}", file=sys.stderr)
                    return 1
            worker.join()
            for hit in ui_index.search(args.query, k=3):
                print(f"{hit.score:.4f}  {hit.path}:{hit.start_line}-{hit.end_line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
