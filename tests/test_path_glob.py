"""Path globs read as shell users write them (path_glob.py): ``[!a]`` negates (SQLite alone
read it as "``!`` or ``a``"), a whole-segment ``**/`` is zero or more folders
(``docs/**/x.md`` also matches ``docs/x.md``); and every search path agrees on what they
match: the library over an index, the sign-bit cache's document masks, the exact scan and the
keyword queries, against numpy over every vector kept by a regex written here."""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gguf_embed import search as search_mod
from gguf_embed import vector_cache
from gguf_embed._vectors import vec_blob
from gguf_embed.errors import InputError
from gguf_embed.index import Index
from gguf_embed.index_paths import glob, glob_problem
from gguf_embed.search import keyword_hits, search, vector_hits
from gguf_embed.store import Store
from gguf_embed.testing import FakeEngine
from tests.support import path_tree

DIMS = 64
PER_DOC = 5
FOLDERS = ("/docs", "/docs/a", "/docs/a/sub", "/docs/b/deep/er", "/docsold", "/docs/!x")


def reference(pattern: str) -> re.Pattern[str]:
    """The shell reading of an absolute ``pattern``, as a regex: ``**/`` any folders (none
    too), ``*`` and ``?`` crossing ``/`` as SQLite's do, ``[!`` and ``[^`` negating."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern[i] == "*":
            out, i = out + ".*", i + 1
        elif pattern[i] == "?":
            out, i = out + ".", i + 1
        elif pattern[i] == "[":
            j = i + 1 + (pattern[i + 1] in "!^")
            end = pattern.index("]", j + (pattern[j] == "]"))  # ] first is a member
            body = pattern[i + 1:end]
            out += "[" + ("^" + body[1:] if body[:1] in "!^" else body) + "]"
            i = end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z", re.S)


@pytest.fixture(autouse=True)
def fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A low threshold: the cache serves every search of more than 50 chunks."""
    monkeypatch.setattr(search_mod, "EXACT_BELOW", 50)
    vector_cache.forget()


def make(tmp_path: Path, n: int = 3000) -> tuple[Store, np.ndarray]:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((n, DIMS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store = Store.open(tmp_path / "i.db")
    store.ensure_vectors(DIMS)
    with store.transaction():
        for d in range(0, n, PER_DOC):
            chunks = [SimpleNamespace(text=f"chunk word{d % 7}", start_line=i + 1,
                                      end_line=i + 1, start_page=None, end_page=None,
                                      n_tokens=2, hash=f"h{d + i}") for i in range(PER_DOC)]
            name = f"{'x' if d % 3 == 0 else ''}{d:06d}.{'md' if d % 4 else 'txt'}"
            store.write_document(path=f"{FOLDERS[(d // PER_DOC) % len(FOLDERS)]}/{name}",
                                 hash="x", size=1, mtime=0.0, kind="markdown", chunks=chunks,
                                 vectors=[vec_blob(v) for v in vectors[d:d + PER_DOC]])
    return store, vectors


def rows(store: Store, pattern: str) -> list[tuple[int, str, bytes]]:
    kept = reference(pattern)
    return [r for r in store.conn.execute(
        "SELECT c.id, d.path, v.embedding FROM chunks c JOIN documents d ON d.id = c.doc_id "
        "JOIN chunk_vectors v ON v.chunk_id = c.id ORDER BY c.id") if kept.match(r[1])]


def truth(store: Store, q: np.ndarray, k: int, pattern: str) -> list[int]:
    kept = rows(store, pattern)
    ids = np.array([r[0] for r in kept])
    matrix = np.frombuffer(b"".join(r[2] for r in kept), dtype="<f4").reshape(len(kept), DIMS)
    return [int(i) for i in ids[np.argsort(-(matrix @ q), kind="stable")[:k]]]


PATTERNS = ["/docs/**/*.md", "/docs/**/x*.md", "/docs/**/sub/**", "/docs/a/**/[!x]*",
            "/docs/**/[^x]*.txt", "/docs/[!a]*/**/*.md", "/**/er/x*", "*/docs/**/0*",
            "/docs/[!]x]*/*"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_fast_path_and_the_exact_scan_agree_with_the_shell_reading(
        tmp_path: Path, pattern: str) -> None:
    store, vectors = make(tmp_path)
    path_glob = glob(pattern)
    assert path_glob is not None
    kept = rows(store, pattern)
    assert 50 < len(kept) < len(vectors)  # the cache's masks serve it, and it leaves some out
    docs = {r[1] for r in kept}
    assert set(store.documents()[p][0] for p in docs) == set(store.document_ids(path_glob))
    rng = np.random.default_rng(7)
    for q in vectors[rng.integers(0, len(vectors), 6)]:
        want = truth(store, q, 10, pattern)
        assert [c for c, _ in vector_hits(store, q, 10, path_glob)] == want
        assert [c for c, _ in vector_hits(store, q, 10, path_glob, exact=True)] == want
        hits = search(store, q, "chunk word1", k=8, mode="hybrid", path_glob=path_glob)
        assert hits and {h.path for h in hits} <= docs
    assert vector_cache.cache_path(store.path).exists()  # the cache did serve
    words = {c for c, _ in keyword_hits(store, "chunk", 10**5, path_glob)}
    assert words == {r[0] for r in kept}
    store.close()


def test_zero_folders_are_matched(tmp_path: Path) -> None:
    store, _ = make(tmp_path)
    top = {p for p in store.documents() if os.path.dirname(p) == "/docs"}
    for pattern in ("/docs/**/*.md", "/docs/**/x*.md", "/**/docs/x*"):
        found = {p for p in store.documents() if reference(pattern).match(p)}
        assert found & top, pattern  # docs/x.md is in docs/**/x.md
        path_glob = glob(pattern)
        assert path_glob is not None
        ids = set(store.document_ids(path_glob))
        assert ids == {store.documents()[p][0] for p in found}, pattern
    store.close()


TEXT = "the archive of the ark\n"
FILES = ("br/d ark.md", "br/a ark.md", "br/!.md", "br/x/inner.md", "br/x/y/deep.md",
         "brother/far.md", "br/[x]/inner.md")


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path_tree.make_index(tmp_path, FILES, TEXT, ("br", "brother"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def found(base: Path, path: str, mode: str = "keyword") -> set[str]:
    return path_tree.found(base, path, mode, "archive")


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
def test_a_bang_class_negates_as_in_the_shell(tree: Path, mode: str) -> None:
    # SQLite read [!a-z] as "! or a-z": it found "d ark.md" and "a ark.md", the opposite
    assert found(tree, "*[!a-z] ark.md", mode) == set()
    under = {n for n in FILES if n.startswith("br/")}
    assert found(tree, "br/[!a]*ark.md", mode) == {"br/d ark.md"}  # was {"br/a ark.md"}
    assert found(tree, "br/[^a]*ark.md", mode) == {"br/d ark.md"}  # as before
    assert found(tree, "br/[!!]*.md", mode) == under - {"br/!.md"}
    assert found(tree, "br/[a!]*.md", mode) == {"br/a ark.md", "br/!.md"}  # ! not first
    # ] first is a member: "not ]"; SQLite read [!]]* as "!" then "]"
    assert found(tree, "br/[!]]*", mode) == under


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
def test_a_globstar_is_zero_or_more_folders(tree: Path, mode: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # SQLite alone needed a folder between br/ and "d ark.md": it found nothing
    assert found(tree, "br/**/d ark.md", mode) == {"br/d ark.md"}
    assert found(tree, "br/**/inner.md", mode) == {"br/x/inner.md", "br/[x]/inner.md"}
    assert found(tree, "br/**/y/*.md", mode) == {"br/x/y/deep.md"}
    assert found(tree, "br/**/*.md", mode) == {n for n in FILES if n.startswith("br/")}
    assert found(tree, "**/far.md", mode) == {"brother/far.md"}
    assert found(tree, "br/**", mode) == {n for n in FILES if n.startswith("br/")}
    assert found(tree, f"{tree}/**/deep.md", mode) == {"br/x/y/deep.md"}
    assert found(tree, "br/x/**/*deep.md", mode) == {"br/x/y/deep.md"}
    assert found(tree, "br/**/", mode) == {n for n in FILES if n.startswith("br/")}
    assert found(tree, "*/x/", mode) == {"br/x/inner.md", "br/x/y/deep.md"}
    monkeypatch.chdir(tree / "br")
    assert found(tree, "./**/d ark.md", mode) == {"br/d ark.md"}
    assert found(tree, "./x/**/inner.md", mode) == {"br/x/inner.md"}
    assert found(tree, "../**/far.md", mode) == {"brother/far.md"}


def test_double_stars_inside_a_name_are_one_star(tree: Path) -> None:
    assert found(tree, "br/d**.md") == {"br/d ark.md"}
    assert found(tree, "br**far.md") == {"brother/far.md"}


@pytest.mark.parametrize("pattern", ["[!]", "*[!", "br/[!]*", "[!z-a]x*"])
def test_a_bang_class_that_can_match_nothing_is_refused(tree: Path, pattern: str) -> None:
    assert glob_problem(pattern) is not None
    with pytest.raises(InputError, match=r"--path") as caught:
        found(tree, pattern)
    assert caught.value.param == "path" and "\n" not in str(caught.value)


def test_too_many_globstars_are_refused_in_one_line(tree: Path) -> None:
    pattern = "/".join(["**", "a"] * 8)  # 2**8 GLOBs
    with pytest.raises(InputError, match=r"\*\*/") as caught:
        found(tree, pattern)
    assert caught.value.param == "path" and "\n" not in str(caught.value)
    assert found(tree, "/".join(["br"] + ["**"] * 20 + ["deep.md"])) == {"br/x/y/deep.md"}


def test_an_existing_name_with_a_bang_class_or_stars_is_still_itself(tree: Path) -> None:
    (tree / "br" / "[!a]**").mkdir()
    (tree / "br" / "[!a]**" / "n.md").write_text(TEXT)
    with Index(tree / "i.db", FakeEngine()) as index:
        index.add([tree / "br"])
    assert found(tree, "br/[!a]**") == {"br/[!a]**/n.md"}


def test_cli_http_and_mcp_read_them_alike(tree: Path) -> None:
    import json

    from click.testing import CliRunner
    from starlette.testclient import TestClient

    from gguf_embed.cli import cli
    from gguf_embed.mcp_server import Service
    from gguf_embed.server import ServerConfig, create_app

    want = {str(tree / "br/d ark.md")}
    patterns = [f"{tree}/br/**/[!a]*ark.md", "br/**/[!a]*ark.md"]
    for pattern in patterns:
        out = CliRunner().invoke(cli, ["search", "archive", "--mode", "keyword", "--db",
                                       "i.db", "--json", "--path", pattern])
        assert out.exit_code == 0, out.stderr
        assert {r["path"] for r in json.loads(out.stdout)} == want, pattern
    app = create_app(FakeEngine(), ServerConfig(model_name="fake", index_path="i.db",
                                                batch_window=0))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        for pattern in patterns:
            body = client.post("/v1/search", json={"query": "archive", "mode": "keyword",
                                                   "path": pattern}).json()
            assert {r["path"] for r in body["data"]} == want, body
    service = Service(FakeEngine(), tree / "i.db")
    for pattern in patterns:
        hits = service.search("archive", mode="keyword", path=pattern)["results"]
        assert {h["path"] for h in hits} == want, pattern
