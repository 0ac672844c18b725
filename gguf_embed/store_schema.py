"""The index's schema: named migrations, each applied once and recorded, in one write
transaction (see :func:`migrate`), and how chunk text goes into the keyword table in each FTS
format the migrations made."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import apsw

from .errors import IndexFileError
from .keywords import CJK_BIGRAMS, CJK_COLUMN, index_text, keyword_columns

SCHEMA_VERSION = 4
FTS_BIGRAMS = "0002_fts_cjk_bigrams"
FTS_CJK_COLUMN = "0003_fts_cjk_column"
CHUNK_LOG = "0004_chunk_log"


def _fts_cjk_bigrams(conn: apsw.Connection) -> None:
    """Rebuild the FTS table in keyword form from the stored chunk text (no re-embedding).

    Runs inside the migration's one transaction: if it is interrupted, the old table, its
    triggers and its rows are all still there and the index searches as before."""
    conn.execute("""
        DROP TRIGGER IF EXISTS chunks_ai;
        DROP TRIGGER IF EXISTS chunks_ad;
        DROP TABLE fts_chunks;
        CREATE VIRTUAL TABLE fts_chunks USING fts5(
            text, content='', contentless_delete=1, tokenize='porter unicode61');
        CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
            DELETE FROM fts_chunks WHERE rowid = old.id;
            DELETE FROM chunk_vectors WHERE chunk_id = old.id;
            DELETE FROM vec_bits WHERE rowid = old.id;
        END;
    """)
    add_keywords(conn, CJK_BIGRAMS, conn.execute("SELECT id, text FROM chunks ORDER BY id"))


def _fts_cjk_column(conn: apsw.Connection) -> None:
    """Rebuild the FTS table with the CJK bigrams in a column of their own (weighted in BM25,
    see keywords.py), from the stored chunk text, in the migration's one transaction."""
    conn.execute("""
        DROP TABLE fts_chunks;
        CREATE VIRTUAL TABLE fts_chunks USING fts5(
            text, cjk, content='', contentless_delete=1, tokenize='porter unicode61');
    """)
    add_keywords(conn, CJK_COLUMN, conn.execute("SELECT id, text FROM chunks ORDER BY id"))


def add_keywords(conn: apsw.Connection, fts_format: str, rows: Iterable[Any]) -> None:
    """FTS rows in ``fts_format`` for (chunk id, chunk text) ``rows``; the oldest format's
    table is fed by a trigger, so it is left to it."""
    if fts_format == CJK_COLUMN:
        conn.executemany("INSERT INTO fts_chunks(rowid, text, cjk) VALUES (?, ?, ?)",
                         ((i, *keyword_columns(cast(str, text))) for i, text in rows))
    elif fts_format == CJK_BIGRAMS:
        conn.executemany("INSERT INTO fts_chunks(rowid, text) VALUES (?, ?)",
                         ((i, index_text(cast(str, text))) for i, text in rows))


MIGRATIONS: list[tuple[str, str | Callable[[apsw.Connection], None]]] = [
    ("0001_base", """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            hash TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime REAL NOT NULL,
            kind TEXT NOT NULL,
            n_chunks INTEGER NOT NULL,
            indexed_at REAL NOT NULL
        );
        CREATE INDEX documents_hash ON documents(hash);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            doc_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
            seq INTEGER NOT NULL,
            text TEXT NOT NULL,
            start_line INTEGER NOT NULL,
            end_line INTEGER NOT NULL,
            start_page INTEGER,
            end_page INTEGER,
            n_tokens INTEGER NOT NULL,
            hash TEXT NOT NULL
        );
        CREATE INDEX chunks_doc ON chunks(doc_id);
        CREATE TABLE chunk_vectors (
            chunk_id INTEGER PRIMARY KEY,
            embedding BLOB NOT NULL
        );
        CREATE INDEX chunks_hash ON chunks(hash);
        CREATE VIRTUAL TABLE fts_chunks USING fts5(
            text, content='chunks', content_rowid='id', tokenize='porter unicode61');
        CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
            INSERT INTO fts_chunks(rowid, text) VALUES (new.id, new.text);
        END;
        CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
            INSERT INTO fts_chunks(fts_chunks, rowid, text) VALUES ('delete', old.id, old.text);
            DELETE FROM chunk_vectors WHERE chunk_id = old.id;
            DELETE FROM vec_bits WHERE rowid = old.id;
        END;
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,
            finished_at REAL,
            summary TEXT
        );
    """),
    (FTS_BIGRAMS, _fts_cjk_bigrams),
    (FTS_CJK_COLUMN, _fts_cjk_column),
    # How many chunks were ever inserted and deleted, bumped by triggers in the transaction
    # that does it (every write path: index, watch, remove, merge, reset), and a random epoch
    # per file: what a derived cache (vector_cache.py) checks itself against.
    (CHUNK_LOG, """
        CREATE TABLE chunk_log (id INTEGER PRIMARY KEY CHECK (id = 1), epoch TEXT NOT NULL,
                                inserted INTEGER NOT NULL, deleted INTEGER NOT NULL);
        INSERT INTO chunk_log VALUES (1, lower(hex(randomblob(16))),
                                      (SELECT count(*) FROM chunks), 0);
        CREATE TRIGGER chunk_log_ai AFTER INSERT ON chunks BEGIN
            UPDATE chunk_log SET inserted = inserted + 1 WHERE id = 1;
        END;
        CREATE TRIGGER chunk_log_ad AFTER DELETE ON chunks BEGIN
            UPDATE chunk_log SET deleted = deleted + 1 WHERE id = 1;
        END;
    """),
]


def has_table(conn: apsw.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() \
        is not None


def applied(conn: apsw.Connection) -> set[str]:
    if not has_table(conn, "migrations"):
        return set()
    return {row[0] for row in conn.execute("SELECT name FROM migrations")}


def pending(conn: apsw.Connection) -> bool:
    """Whether an existing index lacks some named migration."""
    try:
        done = applied(conn)
    except apsw.Error:
        return False
    return bool(done) and any(name not in done for name, _ in MIGRATIONS)


def migrate(conn: apsw.Connection) -> None:
    """Apply each named migration once, recording it (the vector tables come later, with dims).

    All pending steps run in one write transaction, taken up front so that two processes
    opening an old index at once migrate it once: a step that fails leaves the file as it was."""
    if has_table(conn, "meta") and not pending(conn):
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not has_table(conn, "migrations"):
            tables = [row[0] for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name LIMIT 4")]
            if tables:
                raise IndexFileError(
                    f"this SQLite file has other tables ({', '.join(tables[:3])}"
                    f"{', ...' if len(tables) > 3 else ''}): it is not a gguf-embed index; "
                    f"pass another --db")
        conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, "
                     "applied_at REAL NOT NULL)")
        done = applied(conn)
        for name, step in MIGRATIONS:
            if name not in done:
                if callable(step):
                    step(conn)
                else:
                    conn.execute(step)
                conn.execute("INSERT INTO migrations(name, applied_at) VALUES (?, ?)",
                             (name, time.time()))
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                     (json.dumps(SCHEMA_VERSION),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
