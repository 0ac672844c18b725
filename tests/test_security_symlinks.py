"""Symlinks from the attacker's side: a link inside an indexed folder that leads elsewhere
(a folder of secrets, one secret file, a loop) must not bring anything into the index, into
`search`, MCP `search`/`get` or `/v1/search`; `--follow-symlinks` opts in, and ignore rules
still apply to what it reaches.  An index written before this rule (out-of-root documents in
it) serves none of them, and the next run drops them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_embed import Index
from gguf_embed.cli import cli
from gguf_embed.testing import FakeEngine

SECRET = "zanzibarquokka"  # a word no other test text has: found only if a secret leaked


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """docs/ (indexed) beside secrets/ and a secret file, with links out of docs/."""
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "notes.md").write_text("# notes\n\nhow to rotate logs with logrotate\n")
    (docs / "sub" / "deep.md").write_text("# deep\n\nnested page about tar archives\n")
    secrets = tmp_path / "secrets"
    (secrets / "nested").mkdir(parents=True)
    (secrets / "id_rsa.txt").write_text(f"private key {SECRET} one\n")
    (secrets / "nested" / "token.md").write_text(f"api token {SECRET} two\n")
    (secrets / "private.txt").write_text(f"ignored by its own folder {SECRET} three\n")
    (secrets / ".gitignore").write_text("private.txt\n")
    (secrets / "nested" / "back").symlink_to(secrets)  # a loop once the link is followed
    (tmp_path / "shadow.txt").write_text(f"root:{SECRET}:19000:0:99999:7:::\n")
    (docs / "vault").symlink_to(secrets)  # a folder outside
    (docs / "shadow.md").symlink_to(tmp_path / "shadow.txt")  # a file outside
    (docs / "again").symlink_to(secrets)  # a second link to the same folder
    (docs / "inside.md").symlink_to(docs / "notes.md")  # inside: indexed once, as notes.md
    (docs / "sub" / "up").symlink_to(docs / "sub")  # a loop inside
    return tmp_path


def paths(index: Index, docs: Path) -> set[str]:
    return {os.path.relpath(p, docs) for p in index.store.documents()}


def older_index(tree: Path, engine: FakeEngine) -> Path:
    """An index of docs/ with its links followed, written as a version before the boundary
    left it: no record of the followed targets, so what they hold lies outside."""
    db = tree / "i.db"
    with Index(db, engine) as index:
        index.add([tree / "docs"], follow_symlinks=True)
        index.store.set_meta({"links": {}})
    return db


def test_links_out_of_the_root_are_not_followed(tree: Path) -> None:
    docs = tree / "docs"
    with Index(tree / "i.db", FakeEngine()) as index:
        summary = index.add([docs])
        assert paths(index, docs) == {"notes.md", "sub/deep.md"}
        assert summary.symlinks_skipped == 3  # vault, shadow.md, again: once each, no list
        assert not any("vault" in p or "shadow" in p for p, _ in summary.skipped)
        for mode in ("keyword", "hybrid", "vector"):
            hits = index.search(SECRET, k=10, mode=mode)
            assert all(SECRET not in h.snippet and "vault" not in h.path for h in hits), mode


def test_follow_symlinks_opts_in_with_ignore_rules_and_no_loops(tree: Path) -> None:
    docs = tree / "docs"
    with Index(tree / "i.db", FakeEngine()) as index:
        summary = index.add([docs], follow_symlinks=True)
        found = paths(index, docs)
        # the secrets folder once (the second link to it is not walked again), its own
        # .gitignore honoured, its loop not walked; the linked file too
        assert "shadow.md" in found
        copies = [p for p in found if p.endswith("id_rsa.txt")]
        assert len(copies) == 1  # through the first link in name order ("again")
        first = copies[0].split("/")[0]
        assert f"{first}/nested/token.md" in found
        assert not any(p.startswith("vault/") for p in found)
        assert f"{first}/private.txt" not in found
        assert not any("back/" in p for p in found)
        assert summary.symlinks_skipped == 0
        hits = index.search(SECRET, k=10, mode="keyword")
        assert {os.path.relpath(h.path, docs) for h in hits} >= {f"{first}/id_rsa.txt",
                                                                  "shadow.md"}
        # without the option again, what came through links leaves the index
        summary = index.add([docs])
        assert paths(index, docs) == {"notes.md", "sub/deep.md"}
        assert summary.removed >= 3
        assert index.search(SECRET, k=10, mode="keyword") == []


def test_an_old_index_with_documents_outside_serves_none_and_drops_them(tree: Path) -> None:
    """An index written before the rule (no record of followed links): its out-of-root
    documents are never served, and the next run removes them."""
    docs = tree / "docs"
    db = older_index(tree, FakeEngine())
    with Index(db, FakeEngine(), readonly=True) as index:
        assert any("again" in p for p in index.store.documents())  # still in the file
        for mode in ("keyword", "hybrid"):
            hits = index.search(SECRET, k=10, mode=mode)
            assert all(SECRET not in h.snippet for h in hits), mode
            assert not any("again" in h.path or "shadow" in h.path for h in hits)
        assert [h.path for h in index.search("logrotate", k=1, mode="keyword")] == [
            str(docs / "notes.md")]
        many = index.search_many([SECRET, "token"], k=5, mode="keyword")
        assert all("again" not in h.path for hits in many for h in hits)
    with Index(db, FakeEngine()) as index:
        summary = index.add([docs])
        assert summary.removed >= 3
        assert paths(index, docs) == {"notes.md", "sub/deep.md"}


def test_a_file_replaced_by_a_link_after_indexing_is_not_served(tree: Path) -> None:
    docs = tree / "docs"
    db = tree / "i.db"
    with Index(db, FakeEngine()) as index:
        index.add([docs])
    (docs / "notes.md").unlink()
    (docs / "notes.md").symlink_to(tree / "shadow.txt")
    with Index(db, FakeEngine(), readonly=True) as index:
        assert index.search("logrotate", k=5, mode="keyword") == []
    with Index(db, FakeEngine()) as index:
        index.add([docs])
        assert paths(index, docs) == {"sub/deep.md"}


def test_watch_batches_follow_the_same_rule(tree: Path) -> None:
    docs = tree / "docs"
    for name in ("vault", "shadow.md", "again"):
        (docs / name).unlink()
    with Index(tree / "i.db", FakeEngine()) as index:
        index.add([docs])
        (docs / "vault").symlink_to(tree / "secrets")  # made while watching
        (docs / "leak.md").symlink_to(tree / "shadow.txt")
        (docs / "sub" / "x").symlink_to(tree / "secrets" / "nested")
        summary = index.update([docs / "vault", docs / "leak.md", docs / "sub"], [docs])
        assert summary.added == 0 and summary.symlinks_skipped == 3
        assert paths(index, docs) == {"notes.md", "sub/deep.md"}
        summary = index.update([docs / "vault" / "id_rsa.txt"], [docs])  # an event inside
        assert summary.added == 0 and summary.symlinks_skipped == 0  # told once, not per write
        summary = index.update([docs / "vault", docs / "leak.md"], [docs],
                               follow_symlinks=True)
        assert {"vault/id_rsa.txt", "leak.md"} <= paths(index, docs)
        assert "vault/private.txt" not in paths(index, docs)


def test_mcp_search_and_get_refuse_what_leads_outside(tree: Path) -> None:
    pytest.importorskip("mcp")
    from gguf_embed.errors import InputError
    from gguf_embed.mcp_server import Service

    docs = tree / "docs"
    engine = FakeEngine()
    service = Service(engine, older_index(tree, engine), model_name="fake")
    hits = service.search(SECRET, k=10, mode="keyword")["results"]
    assert all(SECRET not in h["snippet"] and "again" not in h["path"] for h in hits)
    with pytest.raises(InputError, match="outside the indexed folders") as caught:
        service.get(str(docs / "again" / "id_rsa.txt"))
    assert str(tree / "secrets") not in str(caught.value)  # where it leads is not told
    with pytest.raises(InputError, match="outside the indexed folders"):
        service.get("shadow.md")
    assert "logrotate" in service.get("notes.md")["text"]


def test_http_search_refuses_what_leads_outside(tree: Path) -> None:
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from gguf_embed.server import ServerConfig, create_app

    docs = tree / "docs"
    engine = FakeEngine()
    db = older_index(tree, engine)
    app = create_app(engine, ServerConfig(model_name="fake", index_path=str(db),
                                          batch_window=0))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        for mode in ("keyword", "hybrid"):
            body = client.post("/v1/search", json={"query": SECRET, "k": 10, "mode": mode})
            assert body.status_code == 200, body.text
            assert all(SECRET not in h["snippet"] and "again" not in h["path"]
                       for h in body.json()["data"]), mode
        body = client.post("/v1/search", json={"query": "logrotate", "mode": "keyword"})
        assert [h["path"] for h in body.json()["data"]] == [str(docs / "notes.md")]


def test_cli_index_says_once_and_search_shows_no_secret(tree: Path, minilm_path: Path) -> None:
    docs = tree / "docs"
    db = tree / "cli.db"
    runner = CliRunner()
    result = runner.invoke(cli, ["index", str(docs), "--db", str(db), "-m", str(minilm_path)])
    assert result.exit_code == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "not followed" in line]
    assert len(lines) == 1 and lines[0].startswith("not followed: 3 symlinks")
    assert "vault" not in result.output and "shadow" not in result.output
    for mode in ("keyword", "hybrid"):
        found = runner.invoke(cli, ["search", SECRET, "--db", str(db), "-m", str(minilm_path),
                                    "--mode", mode, "--json"])
        assert found.exit_code == 0, found.stderr
        assert SECRET not in found.stdout and "vault" not in found.stdout
    followed = runner.invoke(cli, ["index", str(docs), "--db", str(db), "-m",
                                   str(minilm_path), "--follow-symlinks", "--json"])
    assert followed.exit_code == 0, followed.stderr
    found = runner.invoke(cli, ["search", SECRET, "--db", str(db), "-m", str(minilm_path),
                                "--mode", "keyword", "--json"])
    assert SECRET in found.stdout and "private.txt" not in found.stdout


def test_a_link_inside_cannot_carry_an_ignored_folder_past_its_rules(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "private").mkdir(parents=True)
    (docs / ".gitignore").write_text("private/\n")
    (docs / "private" / "diary.md").write_text(f"dear diary {SECRET}\n")
    (docs / "public").symlink_to(docs / "private")  # inside the root, but ignored there
    (docs / "readme.md").symlink_to(docs / "private" / "diary.md")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        summary = index.add([docs], follow_symlinks=True)
        assert paths(index, docs) == {".gitignore"}
        assert summary.symlinks_skipped == 0  # inside links are not "outside" ones
        assert index.search(SECRET, k=5, mode="keyword") == []


def test_the_boundary_without_recorded_roots(tmp_path: Path) -> None:
    """An index that never recorded its roots: a document's own folder is the bound."""
    from gguf_embed.walk import Bounds

    (tmp_path / "docs").mkdir()
    plain = tmp_path / "docs" / "plain.md"
    plain.write_text("x")
    link = tmp_path / "docs" / "link.md"
    link.symlink_to(tmp_path / "elsewhere.txt")
    bounds = Bounds([])
    assert bounds.allows(str(plain)) and not bounds.allows(str(link))
    rooted = Bounds([tmp_path / "docs"], [str(tmp_path / "elsewhere.txt")])
    assert rooted.allows(str(plain)) and rooted.allows(str(link))
    assert not Bounds([tmp_path / "docs"]).allows(str(link))


def test_merge_keeps_the_followed_targets(tree: Path) -> None:
    docs = tree / "docs"
    with Index(tree / "shard.db", FakeEngine()) as shard:
        shard.add([docs], follow_symlinks=True)
    with Index(tree / "out.db", FakeEngine()) as out:
        out.merge_from([tree / "shard.db"])
        hits = out.search(SECRET, k=10, mode="keyword")
        assert any(h.path.endswith("id_rsa.txt") for h in hits)
        assert out.meta["links"][str(docs)]


def test_followed_links_keep_the_ignore_rules_of_their_targets_repository(
        tmp_path: Path) -> None:
    """A link may not carry a folder or file past the .gitignore of the repository it really
    lives in (its target's own place), with or without watch."""
    repo = tmp_path / "project"
    (repo / ".git").mkdir(parents=True)
    (repo / ".gitignore").write_text("secrets/\n*.key\n")
    (repo / "secrets").mkdir()
    (repo / "secrets" / "prod.txt").write_text(f"prod password {SECRET}\n")
    (repo / "docs").mkdir()
    (repo / "docs" / "guide.md").write_text("# guide\n\ninstalling the project\n")
    (repo / "docs" / "signing.key").write_text(f"key {SECRET}\n")
    docs = tmp_path / "notes"
    docs.mkdir()
    (docs / "s").symlink_to(repo / "secrets")
    (docs / "d").symlink_to(repo / "docs")
    (docs / "k.txt").symlink_to(repo / "docs" / "signing.key")
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([docs], follow_symlinks=True)
        assert paths(index, docs) == {"d/guide.md"}
        assert index.search(SECRET, k=5, mode="keyword") == []
        (repo / "docs" / "other.key").write_text(f"another {SECRET}\n")
        (repo / "docs" / "more.md").write_text("# more\n")
        index.update([docs / "d" / "other.key", docs / "d" / "more.md", docs / "s"], [docs],
                     follow_symlinks=True)
        assert paths(index, docs) == {"d/guide.md", "d/more.md"}
        assert index.search(SECRET, k=5, mode="keyword") == []
