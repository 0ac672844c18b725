"""The reads the search caches (vector_cache.py, store_keyword_*.py) make of the index file:
its ``chunk_log`` row (a :class:`State`), the live chunk ids with their documents, and every
sign-bit row.  SQL stays in
``store*.py``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import apsw
import numpy as np

from .store import Store


@dataclass(frozen=True)
class State:
    """What the file's ``chunk_log`` says: which file, and how far its writes have gone (the
    state every cache beside the index, INDEX.bits and INDEX.keywords, is checked against)."""

    epoch: str
    inserted: int
    deleted: int


def chunk_log(conn: apsw.Connection) -> tuple[str, int, int] | None:
    """``(epoch, inserted, deleted)`` of the index open on ``conn``, or None where the table or
    its row is missing (an old file opened read-only, which cannot be migrated)."""
    try:
        row = conn.execute("SELECT epoch, inserted, deleted FROM chunk_log "
                                 "WHERE id = 1").fetchone()
    except Exception:
        return None
    return None if row is None else (str(row[0]), int(row[1]), int(row[2]))


def live_chunks(store: Store) -> tuple[np.ndarray, np.ndarray]:
    """Every chunk's id and document id, by id."""
    rows = store.conn.execute("SELECT id, doc_id FROM chunks ORDER BY id").fetchall()
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    both = np.array(rows, dtype=np.int64)
    return both[:, 0].copy(), both[:, 1].copy()


def sign_bit_rows(store: Store) -> Iterator[tuple[int, bytes]]:
    """``(chunk id, sign-bit blob)`` for every row of ``vec_bits``, in one scan."""
    for rowid, blob in store.conn.execute("SELECT rowid, embedding FROM vec_bits"):
        yield cast(int, rowid), cast(bytes, blob)
