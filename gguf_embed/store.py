"""The index: one SQLite file (APSW + sqlite-vec + FTS5).  Opening it is store_open.py; the
schema's migrations are store_schema.py; the reads of the search caches are store_cache.py,
store_keyword_topk.py and store_keyword_postings.py.

Tables
  meta        key → JSON value: what made the index (model, dims, pooling, prompts, chunking)
  migrations  named schema steps, each recorded once
  documents   path, content hash, size, mtime
  chunks      text, line and page ranges, token count, text hash (→ vector reuse)
  chunk_vectors  float32 vectors by chunk id (exact scoring and rescoring)
  vec_bits    vec0 bit[dims], the sign of each value: sqlite-vec's fast coarse KNN pass
  fts_chunks  FTS5 over chunk text in keyword form (CJK runs as bigrams, see keywords.py),
              contentless: rows go in with their chunk, and leave by a trigger
  runs        one row per index run, with its summary

Every write goes through :meth:`Store.transaction`; WAL mode lets readers search while a run
writes.  A killed process leaves the file at its last committed transaction.

A path that is not valid UTF-8 (a file name with other bytes, which Python carries as lone
surrogates) is stored as a BLOB of its exact bytes and read back as the same ``str``: nothing
about a name is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import apsw
import numpy as np

from . import store_schema
from ._vectors import bit_blob, is_finite_blob
from .errors import IndexFileError, IndexMismatch, NonFiniteVector
from .keywords import CJK_BIGRAMS, CJK_COLUMN, CJK_WEIGHT, UNICODE61
from .path_glob import PathGlob, where
from .store_guard import DAMAGE_ERRORS, check_schema, damaged, read_errors, write_errors
from .store_open import connect, make_parent, probe_extensions
from .store_schema import (
    CHUNK_LOG,
    FTS_BIGRAMS,
    FTS_CJK_COLUMN,
    MIGRATIONS,
    SCHEMA_VERSION,
    add_keywords,
    has_table,
)


@dataclass(frozen=True)
class ChunkRow:
    id: int
    path: str
    text: str
    start_line: int
    end_line: int
    start_page: int | None
    end_page: int | None


class Store:
    """The SQLite file.  Open with :meth:`open`; all writes inside :meth:`transaction`."""

    def __init__(self, conn: apsw.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.meta = self._read_meta()
        self.dims: int | None = self.meta.get("dims")
        # an index that was only opened read-only may still have an old FTS table
        applied = store_schema.applied(conn)
        self.too_new: str | None = None  # why it may only be read (a newer schema wrote it)
        try:
            check_schema(conn, path, applied, [name for name, _ in store_schema.MIGRATIONS],
                             store_schema.SCHEMA_VERSION)
        except IndexFileError as exc:
            self.too_new = str(exc)
        self.fts_format = CJK_COLUMN if FTS_CJK_COLUMN in applied else \
            CJK_BIGRAMS if FTS_BIGRAMS in applied else UNICODE61

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, readonly: bool = False) -> Store:
        path = Path(path)
        if not path.exists():
            if not create or readonly:
                raise IndexFileError(
                    f"no index at {path}; build one first with 'gguf-embed index PATH' "
                    f"(or pass --db FILE)")
            make_parent(path)
        conn = connect(path, readonly=readonly)
        try:
            pending = readonly and store_schema.pending(conn)
        except apsw.Error:
            conn.close()
            with read_errors(path):  # damaged: one line naming it
                raise
        if pending and os.access(path, os.W_OK):
            conn.close()  # an old index we may write: upgrade it once, then read it
            with contextlib.suppress(IndexFileError):  # busy (a long index run): read it as is
                cls.open(path, create=False).close()
            conn = connect(path, readonly=True)
        try:
            if not readonly:
                check_schema(conn, path, store_schema.applied(conn),  # before any write
                             [name for name, _ in store_schema.MIGRATIONS],
                             store_schema.SCHEMA_VERSION)
                with write_errors(path, conn):
                    store_schema.migrate(conn)
            elif not has_table(conn, "meta"):
                raise IndexFileError(f"{path} is not a gguf-embed index")
            return cls(conn, path)  # reads its meta and migrations
        except DAMAGE_ERRORS as exc:
            conn.close()
            raise damaged(path, exc) from exc
        except apsw.Error as exc:
            conn.close()
            raise IndexFileError(f"{path} is not a usable gguf-embed index: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        with write_errors(self.path, self.conn):
            self.conn.close()
        reads = sys.modules.get("gguf_embed.store_read")  # its threads' connections, if any
        if reads is not None:
            reads.release(self.path)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[apsw.Connection]:
        """One write transaction; a full disk or another write error rolls it back and is
        raised as :class:`~gguf_embed.errors.IndexWriteError`."""
        with write_errors(self.path, self.conn), self.conn:
            yield self.conn

    # ---------------------------------------------------------------- meta
    def _read_meta(self) -> dict[str, Any]:
        if not has_table(self.conn, "meta"):
            return {}
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta")}

    def meta_changed(self) -> bool:
        """Whether the file's meta differs from what was read at open (another process
        rebuilt the index since)."""
        return self._read_meta() != self.meta

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.transaction():
            for key, value in values.items():
                self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                                  (key, json.dumps(value)))
        self.meta = self._read_meta()

    def ensure_vectors(self, dims: int) -> None:
        """Create the vector tables for ``dims`` (once per index)."""
        if self.dims is not None:
            if self.dims != dims:
                raise IndexMismatch(f"index {self.path} holds {self.dims}-dim vectors, not {dims}")
            return
        with self.transaction():
            bits = (dims + 7) // 8 * 8
            self.conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS vec_bits USING vec0("
                              f"embedding bit[{bits}])")
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('dims', ?)",
                              (json.dumps(dims),))
        self.dims = dims
        self.meta = self._read_meta()

    def reset(self) -> None:
        """Drop every document, chunk and vector, and the meta (for --reindex)."""
        with self.transaction():
            # a new index has no vector tables yet (nor documents), and the delete trigger
            # names vec_bits: deleting would fail to prepare
            if has_table(self.conn, "vec_bits"):
                self.conn.execute("DELETE FROM documents")  # cascades to chunks, FTS, vectors
                self.conn.execute("DROP TABLE vec_bits")
            self.conn.execute("DELETE FROM meta WHERE key != 'schema_version'")
        self.dims = None
        self.meta = self._read_meta()

    # ---------------------------------------------------------------- documents
    def documents(self) -> dict[str, tuple[int, str, int, float]]:
        """path → (id, hash, size, mtime)."""
        return {path_out(row[0]): tuple(row[1:]) for row in self.conn.execute(
            "SELECT path, id, hash, size, mtime FROM documents")}

    def has_document(self, path: str) -> bool:
        return self.conn.execute("SELECT 1 FROM documents WHERE path = ?",
                                 (path,)).fetchone() is not None

    def documents_under(self, scopes: Iterable[str]) -> dict[str, tuple[int, str, int, float]]:
        """Like :meth:`documents`, for the paths equal to or under ``scopes`` only (by a range
        on the path index, so a watch batch does not read every document)."""
        out: dict[str, tuple[int, str, int, float]] = {}
        for scope in scopes:
            folder = scope.rstrip("/") + "/"
            for row in self.conn.execute(
                    "SELECT path, id, hash, size, mtime FROM documents WHERE path = ? "
                    "OR (path >= ? AND path < ?)", (scope, folder, folder[:-1] + "0")):
                out[row[0]] = tuple(row[1:])
        return out

    def vectors_by_hash(self, hashes: Iterable[str]) -> dict[str, bytes]:
        """Stored vectors of chunks with these text hashes (unchanged text is not re-embedded)."""
        found: dict[str, bytes] = {}
        for part, marks in _in_batches(list(set(hashes))):
            for chunk_hash, blob in self.conn.execute(
                    f"SELECT c.hash, v.embedding FROM chunks c JOIN chunk_vectors v "
                    f"ON v.chunk_id = c.id WHERE c.hash IN ({marks}) GROUP BY c.hash", part):
                found[chunk_hash] = blob
        return found

    def write_document(self, *, path: str, hash: str, size: int, mtime: float, kind: str,
                       chunks: Sequence[Any], vectors: Sequence[bytes]) -> None:
        """Replace one document's rows; call inside :meth:`transaction`.  A vector with NaN
        or Inf is refused (:class:`NonFiniteVector`) before anything is written."""
        conn = self.conn
        bad = [i for i, blob in enumerate(vectors) if not is_finite_blob(blob)]
        if bad:  # the last guard: the indexer already leaves such a file out
            raise NonFiniteVector(f"{path}: chunk {bad[0]} has a non-finite vector (NaN or "
                                  f"Inf); it is not stored", indices=bad)
        conn.execute("DELETE FROM documents WHERE path = ?", (path_in(path),))
        conn.execute(
            "INSERT INTO documents(path, hash, size, mtime, kind, n_chunks, indexed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (path_in(path), hash, size, mtime, kind, len(chunks), time.time()))
        doc_id = conn.last_insert_rowid()
        for seq, (item, blob) in enumerate(zip(chunks, vectors, strict=True)):
            conn.execute(
                "INSERT INTO chunks(doc_id, seq, text, start_line, end_line, start_page, "
                "end_page, n_tokens, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc_id, seq, item.text, item.start_line, item.end_line, item.start_page,
                 item.end_page, item.n_tokens, item.hash))
            chunk_id = conn.last_insert_rowid()
            add_keywords(conn, self.fts_format, [(chunk_id, item.text)])
            conn.execute("INSERT INTO chunk_vectors(chunk_id, embedding) VALUES (?, ?)",
                         (chunk_id, blob))
            conn.execute("INSERT INTO vec_bits(rowid, embedding) VALUES (?, vec_bit(?))",
                         (chunk_id, bit_blob(blob)))

    def move_document(self, old: str, new: str, mtime: float) -> None:
        self.conn.execute("UPDATE documents SET path = ?, mtime = ? WHERE path = ?",
                          (path_in(new), mtime, path_in(old)))

    def touch_document(self, path: str, mtime: float) -> None:
        self.conn.execute("UPDATE documents SET mtime = ? WHERE path = ?", (mtime, path_in(path)))

    def delete_documents(self, paths: Iterable[str]) -> int:
        count = 0
        for path in paths:
            self.conn.execute("DELETE FROM documents WHERE path = ?", (path_in(path),))
            count += self.conn.changes()
        return count

    # ---------------------------------------------------------------- runs and status
    def start_run(self) -> int:
        with self.transaction():
            self.conn.execute("INSERT INTO runs(started_at) VALUES (?)", (time.time(),))
            return self.conn.last_insert_rowid()

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        with self.transaction():
            self.conn.execute("UPDATE runs SET finished_at = ?, summary = ? WHERE id = ?",
                              (time.time(), json.dumps(summary), run_id))

    def counts(self) -> dict[str, int]:
        (docs,), = self.conn.execute("SELECT count(*) FROM documents")
        (chunks, tokens), = self.conn.execute("SELECT count(*), coalesce(sum(n_tokens), 0) "
                                              "FROM chunks")
        return {"documents": docs, "chunks": chunks, "tokens": tokens}

    def last_run(self) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT started_at, finished_at, summary FROM runs "
                                "ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {"started_at": row[0], "finished_at": row[1],
                "summary": json.loads(row[2]) if row[2] else None}

    def chunk_rows(self, ids: Sequence[int],
                   path_glob: PathGlob | None = None) -> dict[int, ChunkRow]:
        """The rows of these chunks that exist (and whose document's path matches
        ``path_glob``, when given), by id."""
        rows: dict[int, ChunkRow] = {}
        match, globs = where("d.path", path_glob) if path_glob else ("1", ())
        for part, marks in _in_batches(ids):
            for row in self.conn.execute(
                    f"SELECT c.id, d.path, c.text, c.start_line, c.end_line, c.start_page, "
                    f"c.end_page FROM chunks c JOIN documents d ON d.id = c.doc_id "
                    f"WHERE c.id IN ({marks}) AND {match}", (*part, *globs)):
                rows[row[0]] = ChunkRow(row[0], path_out(row[1]), *row[2:])
        return rows

    def chunk_docs(self, ids: Iterable[int]) -> dict[int, int]:
        """chunk id → document id, for the chunks that still exist."""
        out: dict[int, int] = {}
        for part, marks in _in_batches(list(set(ids))):
            out.update(cast("list[tuple[int, int]]", self.conn.execute(
                f"SELECT id, doc_id FROM chunks WHERE id IN ({marks})", part).fetchall()))
        return out

    def document_ids(self, path_glob: PathGlob) -> np.ndarray:
        """Ids of the documents whose path matches ``path_glob`` (int64)."""
        match, globs = where("path", path_glob)
        return np.array([r[0] for r in self.conn.execute(
            f"SELECT id FROM documents WHERE {match}", globs)], dtype=np.int64)

    # ---------------------------------------------------------------- ranking queries
    def chunk_count(self) -> int:
        (total,), = self.conn.execute("SELECT count(*) FROM chunks")  # a small index: ~0.5 ms
        return int(cast(int, total))

    def nearest(self, vector_blob: bytes, k: int,
                path_glob: PathGlob | None = None) -> list[tuple[int, float]]:
        """(chunk id, cosine distance) of the ``k`` closest float vectors, by an exact scan
        (of the chunks under ``path_glob`` only, if given), closest first.  A stored vector
        with NaN/Inf has no distance (NULL, which sorts first): when the first scan meets
        one, a second skips them, and they come last, as NaN, for search.py to report."""
        bad: list[tuple[int, float]] = []
        for skip_null in (False, True):
            order = "d IS NULL, d" if skip_null else "d"
            if path_glob:
                match, globs = where("doc.path", path_glob)
                rows = self.conn.execute(
                    "SELECT c.id, vec_distance_cosine(v.embedding, ?) AS d FROM chunks c "
                    "JOIN documents doc ON doc.id = c.doc_id "
                    "JOIN chunk_vectors v ON v.chunk_id = c.id "
                    f"WHERE {match} ORDER BY {order} LIMIT ?",
                    (vector_blob, *globs, k)).fetchall()
            else:
                rows = self.conn.execute(
                    "SELECT chunk_id, vec_distance_cosine(embedding, ?) AS d "
                    f"FROM chunk_vectors ORDER BY {order} LIMIT ?", (vector_blob, k)).fetchall()
            bad = bad or [(int(cast(int, r[0])), float("nan")) for r in rows if r[1] is None]
            if not bad or skip_null:
                break
        return [(int(cast(int, r[0])), float(cast(float, r[1]))) for r in rows
                if r[1] is not None] + bad

    def nearest_bits(self, bits: bytes, k: int) -> list[int]:
        """Chunk ids of the ``k`` nearest sign-bit vectors (Hamming distance): the coarse
        pass, to be rescored exactly."""
        rows = self.conn.execute("SELECT rowid FROM vec_bits WHERE embedding MATCH vec_bit(?) "
                                 "AND k = ?", (bits, k))
        return [int(cast(int, r[0])) for r in rows]

    def keyword_matches(self, match: str, k: int,
                        path_glob: PathGlob | None = None) -> list[tuple[int, float]]:
        """(chunk id, bm25) of the ``k`` best FTS5 matches for the query ``match`` (lower
        bm25 is better), best first."""
        bm25 = f"bm25(fts_chunks, 1.0, {CJK_WEIGHT})" if self.fts_format == CJK_COLUMN \
            else "bm25(fts_chunks)"
        if path_glob:
            under, globs = where("d.path", path_glob)
            rows = self.conn.execute(
                f"SELECT f.rowid, {bm25} AS s FROM fts_chunks f "
                "JOIN chunks c ON c.id = f.rowid JOIN documents d ON d.id = c.doc_id "
                f"WHERE fts_chunks MATCH ? AND {under} ORDER BY s LIMIT ?",
                (match, *globs, k))
        else:
            rows = self.conn.execute(
                f"SELECT rowid, {bm25} AS s FROM fts_chunks WHERE fts_chunks MATCH ? "
                "ORDER BY s LIMIT ?", (match, k))
        return [(int(cast(int, r[0])), float(cast(float, r[1]))) for r in rows]

    def vectors(self, ids: Sequence[int]) -> tuple[list[int], np.ndarray]:
        """Float vectors of these chunks that exist, by id (ascending), as one matrix, read
        at the state this connection sees (rescoring reads ~1,000 scattered rows a search at
        10^6 chunks: several threads share them when their pages are not cached, see
        :mod:`gguf_embed.store_read`)."""
        from .store_read import read_vectors

        return read_vectors(self.conn, self.path, self.dims or 0, ids)


def path_in(path: str) -> str | bytes:
    """A path as stored: text, or its exact bytes when it is not valid UTF-8."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def path_out(value: str | bytes) -> str:
    """A stored path back as the ``str`` Python uses for it (undecodable bytes as surrogates)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _in_batches(items: Sequence[Any], size: int = 500) -> Iterator[tuple[list[Any], str]]:
    """``items`` in slices small enough for one ``IN (?, ...)``, with their placeholders."""
    for start in range(0, len(items), size):
        part = list(items[start:start + size])
        yield part, ",".join("?" * len(part))


__all__ = [  # the schema and the opening live in store_schema / store_open; kept here too
    "CHUNK_LOG", "FTS_BIGRAMS", "FTS_CJK_COLUMN", "MIGRATIONS", "SCHEMA_VERSION", "ChunkRow",
    "Store", "add_keywords", "connect", "make_parent", "path_in", "path_out",
    "probe_extensions",
]
