"""Keyword search inside runs of Chinese, Japanese and Korean text (CJK bigrams in FTS5), and
the in-place migration of indexes whose FTS table was built with plain ``unicode61``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gguf_embed import store_schema as store_module
from gguf_embed.index import Index
from gguf_embed.keywords import fts_query, index_text, query_terms
from gguf_embed.search import keyword_hits
from gguf_embed.store import FTS_BIGRAMS, FTS_CJK_COLUMN, Store, connect
from gguf_embed.testing import FakeEngine

# Lines in the style of the tldr pages (CC-BY 4.0), written for this test.
PAGES = {
    "zh.md": "# a2disconf\n\n- 在基于 Debian 的操作系统上禁用 Apache 配置文件：\n\n"
             "`sudo a2disconf {{配置文件}}`\n",
    "zh2.md": "# apt\n\n- 更新可用软件包列表：\n\n`sudo apt update`\n",
    "ja.md": "# apk\n\n- 新しいパッケージをインストールする:\n\n`apk add {{パッケージ名}}`\n",
    "ja2.md": "# ls\n\n- ディレクトリの内容を一覧表示する:\n\n`ls`\n",
    "ko.md": "# a2disconf\n\n- Debian 기반 운영체제에서 Apache 구성 파일을 비활성화합니다:\n\n"
             "`sudo a2disconf {{구성_파일}}`\n",
    "ko2.md": "# cp\n\n- 디렉토리를 재귀적으로 복사합니다:\n\n`cp -r {{경로}} {{대상}}`\n",
    "en.md": "# tar\n\n- Compress a folder into an archive:\n\n"
             "`tar czf {{archive.tar.gz}} {{dir}}`\n",
}
# A word from inside a run of each language, and the page it must find.
WORDS = [("操作系统", "zh.md"), ("软件包", "zh2.md"), ("パッケージ", "ja.md"), ("一覧", "ja2.md"),
         ("운영체제", "ko.md"), ("복사", "ko2.md"), ("archive", "en.md")]


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in PAGES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_bigrams_of_runs_and_latin_untouched() -> None:
    assert index_text("禁用配置文件") == " 禁用 用配 配置 置文 文件 "
    assert index_text("在基于Debian上") == " 在基 基于 Debian 上 "
    assert index_text("Compress a folder, twice.") == "Compress a folder, twice."
    assert query_terms("파일을 Tar") == ["파일", "일을", "tar"]
    assert fts_query('say "hi"') == '"say" OR "hi"'
    assert fts_query("。、") == ""  # CJK punctuation alone is no term


@pytest.mark.parametrize(("word", "page"), WORDS)
def test_keyword_search_finds_words_inside_runs(tmp_path: Path, docs: Path, word: str,
                                                page: str) -> None:
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([docs])
        hits = index.search(word, k=3, mode="keyword")
        assert hits and Path(hits[0].path).name == page
        # the snippet is the original line, not its bigrams
        assert word in hits[0].snippet
        assert hits[0].snippet in PAGES[page].replace("\n\n", " ").replace("\n", " ")


def older_index(path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch, steps: int,
                fts_format: str) -> str:
    """An index built by code that had only the first ``steps`` migrations; its FTS table's
    SQL."""
    with monkeypatch.context() as m:
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:steps])
        with Index(path, FakeEngine()) as index:
            index.add([docs])
            assert index.store.fts_format == fts_format
            return index.store.conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'fts_chunks'").fetchone()[0]


def old_format_index(path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index as the code before the CJK migration built it (porter unicode61, triggers)."""
    assert "content='chunks'" in older_index(path, docs, monkeypatch, 1, "unicode61")


def names(hits: list) -> list[str]:
    return [Path(h.path).name for h in hits]


def test_old_index_migrates_in_place_without_reembedding(
        tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "old.db"
    old_format_index(db, docs, monkeypatch)
    store = Store(connect(db, readonly=True), db)  # read without upgrading
    assert [Path(p).name for p in store.documents()]
    assert keyword_hits(store, "操作系统", 5) == []  # the bug: a word inside a run
    english = keyword_hits(store, "compress archive", 5)
    assert english
    vectors = store.conn.execute("SELECT chunk_id, embedding FROM chunk_vectors "
                                 "ORDER BY chunk_id").fetchall()
    store.close()

    engine = FakeEngine()
    with Index(db, engine) as index:  # a writable open applies the migration
        assert index.store.fts_format == "cjk-column"
        assert engine.calls == []  # nothing was re-embedded
        conn = index.store.conn
        assert conn.execute("SELECT chunk_id, embedding FROM chunk_vectors "
                            "ORDER BY chunk_id").fetchall() == vectors
        assert conn.execute("SELECT 1 FROM migrations WHERE name = ?",
                            (FTS_BIGRAMS,)).fetchone()
        # same ranking (BM25 values move: the CJK pages now have more tokens)
        assert [i for i, _ in keyword_hits(index.store, "compress archive", 5)] == \
            [i for i, _ in english]
        for word, page in WORDS:
            assert names(index.search(word, k=1, mode="keyword")) == [page], word
        # later writes keep the new table in step: delete and re-add one file
        index.remove([docs / "zh.md"])
        assert index.search("操作系统", k=3, mode="keyword") == []
        index.add([docs])
        assert names(index.search("操作系统", k=1, mode="keyword")) == ["zh.md"]
        (fts,), = conn.execute("SELECT count(*) FROM fts_chunks")
        (chunks,), = conn.execute("SELECT count(*) FROM chunks")
        assert fts == chunks


def test_read_only_open_upgrades_a_writable_old_index(
        tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "old.db"
    old_format_index(db, docs, monkeypatch)
    with Index(db, readonly=True) as index:  # what `gguf-embed search` opens
        assert index.store.fts_format == "cjk-column"
        assert names(index.search("パッケージ", k=1, mode="keyword")) == ["ja.md"]


def test_failed_migration_rolls_back(tmp_path: Path, docs: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "old.db"
    old_format_index(db, docs, monkeypatch)
    calls = []

    def broken(text: str) -> str:
        calls.append(text)
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return index_text(text)

    with monkeypatch.context() as m:
        m.setattr(store_module, "index_text", broken)
        with pytest.raises(RuntimeError):
            Store.open(db)
    assert len(calls) == 3
    assert_old_index_works(db)
    with Index(db, FakeEngine()) as index:  # the next open finishes the job
        assert names(index.search("운영체제", k=1, mode="keyword")) == ["ko.md"]


def test_killed_migration_leaves_the_old_index_working(
        tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "old.db"
    old_format_index(db, docs, monkeypatch)
    script = textwrap.dedent(f"""
        import os
        from gguf_embed import store, store_schema
        seen = []
        def dies(text):
            seen.append(text)
            if len(seen) == 4:
                os._exit(9)  # killed mid-transaction: no rollback, no cleanup
            return text
        store_schema.index_text = dies
        store.Store.open({str(db)!r})
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    assert_old_index_works(db)
    with Index(db, FakeEngine()) as index:
        assert names(index.search("一覧", k=1, mode="keyword")) == ["ja2.md"]


def assert_old_index_works(db: Path) -> None:
    store = Store(connect(db, readonly=True), db)
    try:
        assert store.fts_format == "unicode61"
        assert not store.conn.execute("SELECT 1 FROM migrations WHERE name = ?",
                                      (FTS_BIGRAMS,)).fetchone()
        assert names_of(store, keyword_hits(store, "compress archive", 5)) == ["en.md"]
        (fts,), = store.conn.execute("SELECT count(*) FROM fts_chunks")
        assert fts == len(PAGES)
    finally:
        store.close()


def names_of(store: Store, hits: list[tuple[int, float]]) -> list[str]:
    rows = store.chunk_rows([i for i, _ in hits])
    return [Path(rows[i].path).name for i, _ in hits]


# A command name (Latin) beside a common CJK phrase: the page of the command must come first,
# not the page that repeats the phrase (at full weight its bigrams outscored the rare name).
ARCHIVERS = {
    "tar.md": "# tar\n\n- アーカイブを展開する:\n\n`tar xf {{ファイル}}`\n",
    "unzip.md": "# unzip\n\n- ZIP アーカイブを展開する:\n\n`unzip {{ファイル}}`\n\n"
                "- アーカイブの中身を一覧表示する:\n\n`unzip -l {{ファイル}}`\n",
    "7z.md": "# 7z\n\n- アーカイブを展開する:\n\n`7z x {{ファイル}}`\n\n"
             "- アーカイブを作成する:\n\n`7z a {{ファイル}}`\n",
    "gzip.md": "# gzip\n\n- ファイルを圧縮する:\n\n`gzip {{ファイル}}`\n",
}


def test_a_latin_name_outweighs_a_common_cjk_phrase(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in ARCHIVERS.items():
        (folder / name).write_text(text, encoding="utf-8")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([folder])
        assert names(index.search("tar アーカイブを作成する", k=4, mode="keyword"))[:2] == \
            ["tar.md", "7z.md"]
        # the phrase alone still finds the page that has it
        assert names(index.search("アーカイブを作成する", k=1, mode="keyword")) == ["7z.md"]


def bigram_format_index(path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An index as the first CJK release built it: bigrams in the one FTS column."""
    assert "cjk" not in older_index(path, docs, monkeypatch, 2, "cjk-bigrams")


def test_bigram_index_moves_to_the_cjk_column_in_place(
        tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "bigrams.db"
    bigram_format_index(db, docs, monkeypatch)
    store = Store(connect(db, readonly=True), db)
    assert store.fts_format == "cjk-bigrams"
    assert names_of(store, keyword_hits(store, "操作系统", 5)) == ["zh.md"]  # it works as it is
    vectors = store.conn.execute("SELECT chunk_id, embedding FROM chunk_vectors "
                                 "ORDER BY chunk_id").fetchall()
    store.close()
    engine = FakeEngine()
    with Index(db, engine) as index:
        assert index.store.fts_format == "cjk-column"
        assert engine.calls == []
        conn = index.store.conn
        assert conn.execute("SELECT chunk_id, embedding FROM chunk_vectors "
                            "ORDER BY chunk_id").fetchall() == vectors
        assert conn.execute("SELECT 1 FROM migrations WHERE name = ?",
                            (FTS_CJK_COLUMN,)).fetchone()
        for word, page in WORDS:
            assert names(index.search(word, k=1, mode="keyword")) == [page], word
        index.remove([docs / "ja.md"])
        assert index.search("パッケージ", k=3, mode="keyword") == []
        index.add([docs])
        assert names(index.search("パッケージ", k=1, mode="keyword")) == ["ja.md"]
        (fts,), = conn.execute("SELECT count(*) FROM fts_chunks")
        assert fts == len(PAGES)


def test_failed_column_migration_leaves_the_bigram_index_working(
        tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "bigrams.db"
    bigram_format_index(db, docs, monkeypatch)
    calls = []

    def broken(text: str) -> tuple[str, str]:
        calls.append(text)
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return ("", "")

    with monkeypatch.context() as m:
        m.setattr(store_module, "keyword_columns", broken)
        with pytest.raises(RuntimeError):
            Store.open(db)
    assert len(calls) == 3
    store = Store(connect(db, readonly=True), db)
    try:
        assert store.fts_format == "cjk-bigrams"
        assert names_of(store, keyword_hits(store, "운영체제", 5)) == ["ko.md"]
        (fts,), = store.conn.execute("SELECT count(*) FROM fts_chunks")
        assert fts == len(PAGES)
    finally:
        store.close()
    with Index(db, FakeEngine()) as index:
        assert index.store.fts_format == "cjk-column"
        assert names(index.search("운영체제", k=1, mode="keyword")) == ["ko.md"]
