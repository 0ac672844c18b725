"""``path=`` / ``--path``: a path naming an existing file or folder matches exactly it, even
with ``[``, ``*`` or ``?`` in its name; a folder never matches its longer-named siblings; a
glob that can match nothing and an empty filter are refused on every surface (library, CLI,
HTTP, MCP), before any query is embedded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gguf_embed.cli import cli
from gguf_embed.errors import InputError
from gguf_embed.index import Index
from gguf_embed.index_paths import glob, glob_problem
from gguf_embed.testing import FakeEngine
from tests.support import path_tree

TEXT = "the archive of the ark\n"
FILES = ("br/[draft] ark.md", "br/d ark.md", "br/a ark.md", "br/[x]/inner.md",
         "br/x/inner.md", "brother/far.md", "br/star*.md", "br/stars.md")


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The index ``i.db`` of ``br/`` and ``brother/``, with the current folder at their
    parent (the CLI resolves --path from there)."""
    path_tree.make_index(tmp_path, FILES, TEXT, ("br", "brother"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def found(base: Path, path: str, mode: str = "keyword") -> set[str]:
    return path_tree.found(base, path, mode, "archive")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
def test_an_existing_file_with_glob_characters_matches_exactly_itself(tree: Path,
                                                                      mode: str) -> None:
    # read as a glob, [draft] is one character of d, r, a, f, t: it found "d ark.md" and
    # "a ark.md", never the file named
    assert found(tree, "br/[draft] ark.md", mode) == {"br/[draft] ark.md"}
    assert found(tree, str(tree / "br/[draft] ark.md"), mode) == {"br/[draft] ark.md"}
    assert found(tree, "br/star*.md", mode) == {"br/star*.md"}  # not stars.md


def test_an_existing_folder_with_glob_characters_matches_what_is_under_it(tree: Path) -> None:
    assert found(tree, "br/[x]") == {"br/[x]/inner.md"}
    assert found(tree, "br/[x]/") == {"br/[x]/inner.md"}


def test_a_folder_does_not_match_its_longer_named_siblings(tree: Path) -> None:
    # "br" as the prefix "/…/br*" also took brother/far.md
    under = {n for n in FILES if n.startswith("br/")}
    assert found(tree, "br") == under
    assert found(tree, "br/") == under
    assert found(tree, "./br") == under


def test_globs_still_work(tree: Path) -> None:
    assert found(tree, "*/[[]draft] ark.md") == {"br/[draft] ark.md"}
    assert found(tree, "*[da] ark.md") == {"br/d ark.md", "br/a ark.md"}
    assert found(tree, "*/far.md") == {"brother/far.md"}
    assert found(tree, "*[]]*") == {"br/[draft] ark.md", "br/[x]/inner.md"}  # ] first: member
    assert found(tree, "*[^a-z] ark.md") == {"br/[draft] ark.md"}  # SQLite's negation: ^
    assert found(tree, "*[a-c] ark.md") == {"br/a ark.md"}
    assert found(tree, "*.nothing") == set()


def test_a_relative_glob_starts_at_a_folder_and_dot_slash_at_the_current_one(
        tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "ther/*.md" was "*ther/*.md" (brother/far.md); "./*.md" was "**.md" (every document);
    # ".x/*.md" lost its dot to lstrip("./") and became "*x/*.md" (br/x/inner.md)
    assert found(tree, "ther/*.md") == set()
    assert found(tree, "br/*.md") == {n for n in FILES if n.startswith("br/")}
    assert found(tree, ".x/*.md") == set()
    monkeypatch.chdir(tree / "br" / "x")
    assert found(tree, "./*.md") == {"br/x/inner.md"}
    assert found(tree, "../*ark.md") == {"br/[draft] ark.md", "br/d ark.md", "br/a ark.md"}
    assert found(tree, "./../../brother/*") == {"brother/far.md"}
    monkeypatch.chdir(tree / "br" / "[x]")  # the current folder's name is no glob
    assert found(tree, "./*.md") == {"br/[x]/inner.md"}


@pytest.mark.parametrize("pattern", ["[", "[a-", "*[draft", "br/[]", "[^]", "*[z-a].md"])
def test_a_glob_that_can_match_nothing_is_refused(tree: Path, pattern: str) -> None:
    with pytest.raises(InputError, match=r"--path") as caught:
        found(tree, pattern)
    assert caught.value.param == "path"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("pattern", ["", " ", "\t"])
def test_an_empty_filter_is_refused_not_taken_as_everything(tree: Path, pattern: str) -> None:
    with pytest.raises(InputError, match="empty") as caught:
        found(tree, pattern)
    assert caught.value.param == "path"
    assert glob(None) is None  # no filter at all is still every document


def test_a_file_named_like_a_bad_glob_is_found(tree: Path) -> None:
    (tree / "br" / "[").write_text(TEXT)
    with Index(tree / "i.db", FakeEngine()) as index:
        index.add([tree / "br"])
    assert found(tree, "br/[") == {"br/["}
    assert glob_problem("br/[") is not None  # read as a glob, it could match nothing


def test_the_filter_is_checked_before_the_query_is_embedded(tree: Path) -> None:
    class Counting(FakeEngine):
        calls = 0

        def encode(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            Counting.calls += 1
            return super().encode(*args, **kwargs)  # type: ignore[arg-type]

    with Index(tree / "i.db", Counting(), readonly=True) as index:
        with pytest.raises(InputError):
            index.search("archive", path="[")
        with pytest.raises(InputError):
            index.search_many(["archive", "ark"], path="")
    assert Counting.calls == 0


def test_cli(tree: Path) -> None:
    ok = run("search", "archive", "--mode", "keyword", "--db", "i.db", "--json", "--path",
             "br/[draft] ark.md")
    assert ok.exit_code == 0, ok.stderr
    assert [Path(r["path"]).name for r in json.loads(ok.stdout)] == ["[draft] ark.md"]
    for pattern, fragment in (("[", "no ] closes"), ("[a-", "no ] closes"),
                              ("", "is empty")):
        # found before the index is opened or a model loads
        for db in ("i.db", "missing.db"):
            bad = run("search", "archive", "--db", db, "--path", pattern)
            assert bad.exit_code == 1 and bad.stdout == "", bad.stderr
            assert bad.stderr.startswith("Error: ") and bad.stderr.count("\n") == 1, bad.stderr
            assert "--path" in bad.stderr and fragment in bad.stderr, bad.stderr


def test_http_and_mcp_agree(tree: Path) -> None:
    from starlette.testclient import TestClient

    from gguf_embed.mcp_server import Service
    from gguf_embed.server import ServerConfig, create_app

    exact = str(tree / "br/[draft] ark.md")
    app = create_app(FakeEngine(), ServerConfig(model_name="fake", index_path="i.db",
                                                batch_window=0))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        body = client.post("/v1/search", json={"query": "archive", "mode": "keyword",
                                               "path": exact}).json()
        assert [r["path"] for r in body["data"]] == [exact]
        for pattern in ("[a-", ""):
            bad = client.post("/v1/search", json={"query": "archive", "path": pattern})
            assert bad.status_code == 400, bad.text
            assert bad.json()["error"]["param"] == "path"
    service = Service(FakeEngine(), tree / "i.db")
    hits = service.search("archive", mode="keyword", path=exact)["results"]
    assert [h["path"] for h in hits] == [exact]
    for pattern in ("[a-", ""):
        with pytest.raises(InputError):
            service.search("archive", path=pattern)


@pytest.mark.parametrize("pattern,fragment", [("*" + "a" * 5000, "characters long"),
                                              ("br/caf\udce9*", "not valid UTF-8")])
def test_a_filter_too_long_or_not_utf8_names_the_option(tree: Path, pattern: str,
                                                        fragment: str) -> None:
    # "the path filter is 5,001 characters long": every other refusal names --path
    with pytest.raises(InputError, match=fragment) as caught:
        found(tree, pattern)
    assert "the path filter (--path)" in str(caught.value)
    assert caught.value.param == "path" and "\n" not in str(caught.value)
