"""The records of an indexing run (see indexer.py): :class:`IndexSummary`, what it did;
:class:`Progress`, what it has done so far, handed to the progress callback; :class:`Stage`, a
long step after the writes (a search cache built); and the indexer's
own :class:`Pending` (a changed file, read and chunked, waiting for its vectors) and
:class:`Flight` (a batch on its way through an executor).  Apart from indexer.py so that
these plain records import nothing of the walk, the extractors or the executors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .chunking import Chunk
    from .executor import EmbedJob


@dataclass
class IndexSummary:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    # symlinks whose target leaves the indexed folders, not followed (see walk.py)
    symlinks_skipped: int = 0
    chunks: int = 0
    chunks_reused: int = 0
    tokens_embedded: int = 0
    seconds: float = 0.0
    cancelled: bool = False  # stopped early by the cancel event: run again to finish

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added, "updated": self.updated, "moved": self.moved,
            "removed": self.removed, "unchanged": self.unchanged,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "symlinks_skipped": self.symlinks_skipped,
            "chunks": self.chunks, "chunks_reused": self.chunks_reused,
            "tokens_embedded": self.tokens_embedded, "seconds": round(self.seconds, 3),
            "tokens_per_second": round(self.tokens_embedded / self.seconds, 1)
            if self.seconds else 0.0,
            "cancelled": self.cancelled,
        }


@dataclass
class Progress:
    """Handed to the progress callback after every batch."""

    files_done: int
    files_total: int
    chunks: int
    tokens: int
    elapsed: float
    path: str = ""

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        if not self.files_done or self.files_done >= self.files_total:
            return None
        return self.elapsed / self.files_done * (self.files_total - self.files_done)


@dataclass(frozen=True)
class Stage:
    """Handed to ``on_stage`` as a long step after a run's writes starts (the CLI says so on
    stderr): ``name`` is ``"bits"`` (``INDEX.bits``, the sign bits: vector_cache.py) or
    ``"keywords"`` (``INDEX.keywords``: store_keyword_cache.py), ``how`` ``"build"`` (read
    from the whole index: tens of seconds at a million chunks) or ``"refresh"`` (the changed
    chunks only), ``chunks`` how many the index holds."""

    name: str
    how: str
    chunks: int


@dataclass
class Pending:
    """A changed file, read and chunked, waiting for its vectors."""

    path: str
    hash: str
    size: int
    mtime: float
    kind: str
    chunks: list[Chunk]
    existed: bool


@dataclass
class Flight:
    """A batch on its way: the vectors the store had, the texts an executor is embedding,
    and the chunks that an earlier batch in flight is embedding (written before this one)."""

    batch: list[Pending]
    vectors: dict[str, bytes]  # chunk hash -> vector blob
    todo: list[str]  # hashes whose texts went to the executor, in order
    job: EmbedJob | None
    borrowed: dict[str, Flight]
    n_chunks: int
    report: tuple[int, int, float, str] | None = None  # progress to report once written
    error: str = ""
    nonfinite: set[str] = field(default_factory=set)  # hashes the model gave NaN/Inf for

    def job_done(self) -> bool:
        return self.job is None or self.job.wait(0)
