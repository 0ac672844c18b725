"""The SQL of merging a shard index into another (the rules are in merge.py).

A shard is attached to the output's connection and copied table by table with
``INSERT ... SELECT``: document and chunk ids are shifted past the output's, FTS rows are made
from the chunk text in the output's keyword form (see keywords.py; the shard's own FTS table,
contentless, is never read), and the sign-bit rows are copied as they are.  One shard is one
transaction: interrupted, the output holds every earlier shard and none of this one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import apsw

from .errors import IndexFileError
from .store import Store, add_keywords
from .store_guard import DAMAGE_ERRORS, damaged

SHARD = "gguf_shard"  # the schema name the shard is attached as


@dataclass
class ShardCounts:
    documents: int = 0
    chunks: int = 0
    replaced: int = 0  # documents in the output that this shard's newer copy replaced
    kept: int = 0  # documents of this shard skipped: the output's copy is as new or newer


def _attach(conn: apsw.Connection, shard: Path) -> None:
    conn.execute(f"ATTACH DATABASE ? AS {SHARD}", (os.fspath(shard),))


def _detach(conn: apsw.Connection) -> None:
    conn.execute(f"DETACH DATABASE {SHARD}")


def duplicate_paths(store: Store, shard: Path, limit: int = 3) -> tuple[int, list[str]]:
    """How many of the shard's document paths the output already holds, and a few of them."""
    conn = store.conn
    _attach(conn, shard)
    try:
        (count,), = conn.execute(
            f"SELECT count(*) FROM {SHARD}.documents s JOIN main.documents m ON m.path = s.path")
        some = [os.fsdecode(r[0]) if isinstance(r[0], bytes) else cast(str, r[0])
                for r in conn.execute(
                    f"SELECT s.path FROM {SHARD}.documents s JOIN main.documents m "
                    f"ON m.path = s.path ORDER BY s.path LIMIT ?", (limit,))]
    finally:
        _detach(conn)
    return int(cast(int, count)), some


def merge_shard(store: Store, shard: Path) -> ShardCounts:
    """Copy the documents of the index file ``shard`` into ``store`` in one transaction.

    A path both hold keeps the copy with the newer mtime (the output's on a tie, so a merge
    run again after an interruption adds nothing twice)."""
    conn = store.conn
    counts = ShardCounts()
    _attach(conn, shard)
    try:
        with store.transaction():
            conn.execute("DROP TABLE IF EXISTS temp.merge_docs")
            conn.execute("CREATE TEMP TABLE merge_docs (id INTEGER PRIMARY KEY)")
            (counts.kept,), = conn.execute(
                f"SELECT count(*) FROM {SHARD}.documents s JOIN main.documents m "
                f"ON m.path = s.path WHERE s.mtime <= m.mtime")
            conn.execute(
                f"DELETE FROM main.documents WHERE id IN (SELECT m.id FROM main.documents m "
                f"JOIN {SHARD}.documents s ON s.path = m.path WHERE s.mtime > m.mtime)")
            counts.replaced = conn.changes()  # their chunks, FTS and vector rows go by trigger
            conn.execute(
                f"INSERT INTO temp.merge_docs(id) SELECT s.id FROM {SHARD}.documents s "
                f"WHERE NOT EXISTS (SELECT 1 FROM main.documents m WHERE m.path = s.path)")
            (doc_shift,), = conn.execute("SELECT coalesce(max(id), 0) FROM main.documents")
            (chunk_shift,), = conn.execute(
                "SELECT max((SELECT coalesce(max(id), 0) FROM main.chunks), "
                "(SELECT coalesce(max(chunk_id), 0) FROM main.chunk_vectors))")
            shift = {"d": doc_shift, "c": chunk_shift}
            conn.execute(
                f"INSERT INTO main.documents(id, path, hash, size, mtime, kind, n_chunks, "
                f"indexed_at) SELECT s.id + :d, s.path, s.hash, s.size, s.mtime, s.kind, "
                f"s.n_chunks, s.indexed_at FROM {SHARD}.documents s "
                f"JOIN temp.merge_docs USING (id) ORDER BY s.id", shift)
            counts.documents = conn.changes()
            _copied("documents")
            chosen = f"{SHARD}.chunks c WHERE c.doc_id IN (SELECT id FROM temp.merge_docs)"
            conn.execute(
                f"INSERT INTO main.chunks(id, doc_id, seq, text, start_line, end_line, "
                f"start_page, end_page, n_tokens, hash) SELECT c.id + :c, c.doc_id + :d, "
                f"c.seq, c.text, c.start_line, c.end_line, c.start_page, c.end_page, "
                f"c.n_tokens, c.hash FROM {chosen} ORDER BY c.id", shift)
            counts.chunks = conn.changes()
            _copied("chunks")
            add_keywords(conn, store.fts_format, conn.cursor().execute(
                f"SELECT c.id + :c, c.text FROM {chosen} ORDER BY c.id", shift))
            _copied("keywords")
            conn.execute(
                f"INSERT INTO main.chunk_vectors(chunk_id, embedding) SELECT v.chunk_id + :c, "
                f"v.embedding FROM {SHARD}.chunk_vectors v JOIN {SHARD}.chunks c "
                f"ON c.id = v.chunk_id WHERE c.doc_id IN (SELECT id FROM temp.merge_docs) "
                f"ORDER BY v.chunk_id", shift)
            _copied("vectors")
            conn.execute(
                f"INSERT INTO main.vec_bits(rowid, embedding) SELECT b.rowid + :c, "
                f"vec_bit(b.embedding) FROM {SHARD}.vec_bits b WHERE b.rowid IN "
                f"(SELECT c.id FROM {chosen})", shift)
            conn.execute("DROP TABLE temp.merge_docs")
            _copied("bits")
    except DAMAGE_ERRORS as exc:  # the shard's pages, or the output's: say which
        which = shard if not _intact(conn) else store.path
        _detach_quietly(conn)
        raise damaged(which, exc, what="shard" if which == shard else "index") from exc
    except apsw.Error as exc:
        _detach_quietly(conn)
        raise IndexFileError(f"cannot merge {shard}: {exc}") from exc
    except BaseException:  # a full disk (IndexWriteError), an interrupt: that error is told
        _detach_quietly(conn)
        raise
    _detach(conn)
    return counts


def _intact(conn: apsw.Connection) -> bool:
    """Whether SQLite's quick check finds the attached shard whole (after a damage error: the
    shard is to blame, else the output); reads it all, writes nothing."""
    try:
        return [tuple(r) for r in conn.execute(f"PRAGMA {SHARD}.quick_check(1)")] == [("ok",)]
    except apsw.Error:
        return False


def _detach_quietly(conn: apsw.Connection) -> None:
    """Detach after an error; a cursor the error left open may keep the shard busy, and the
    error that stopped the merge is the one to tell."""
    with contextlib.suppress(apsw.Error):
        _detach(conn)


def _copied(step: str) -> None:
    """Called inside the transaction after each table is copied (tests interrupt here)."""
