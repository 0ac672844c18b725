"""Credential files inside an indexed folder (`.env`, private keys, netrc, `.ssh/`) are not
indexed, so search, MCP and HTTP never serve them; a file named on the command line is
indexed as asked, and watch batches follow the same rule."""

from __future__ import annotations

import os
from pathlib import Path

from gguf_embed import Index
from gguf_embed.testing import FakeEngine
from gguf_embed.walk import Rules, walk

SECRET = "quokkazanzibar"


def project(tmp_path: Path) -> Path:
    docs = tmp_path / "proj"
    (docs / ".ssh").mkdir(parents=True)
    (docs / ".aws").mkdir()
    (docs / "notes.md").write_text("# notes\n\nhow to deploy the service\n")
    (docs / ".env.example").write_text("API_TOKEN=put-yours-here\n")
    for name in (".env", ".env.production", "server.pem", "tls.key", "id_ed25519", ".netrc",
                 ".pgpass", ".npmrc", ".git-credentials"):
        (docs / name).write_text(f"secret {SECRET}\n")
    (docs / ".ssh" / "config").write_text(f"Host x\n  IdentityFile {SECRET}\n")
    (docs / ".aws" / "credentials").write_text(f"aws_secret_access_key={SECRET}\n")
    return docs


def names(index: Index, docs: Path) -> set[str]:
    return {os.path.relpath(p, docs) for p in index.store.documents()}


def test_credential_files_are_not_indexed_and_are_named_as_skipped(tmp_path: Path) -> None:
    docs = project(tmp_path)
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        summary = index.add([docs])
        assert names(index, docs) == {"notes.md", ".env.example"}
        skipped = {os.path.basename(p): why for p, why in summary.skipped}
        assert {".env", "server.pem", "id_ed25519", ".netrc"} <= set(skipped)
        assert "credentials" in skipped[".env"]
        assert not index.search(SECRET, mode="keyword")


def test_a_credential_file_named_on_the_command_line_is_indexed(tmp_path: Path) -> None:
    docs = project(tmp_path)
    found = [item for item in walk([docs / ".env"], Rules()) if not hasattr(item, "reason")]
    assert [str(f.path) for f in found] == [str(docs / ".env")]


def test_watch_batches_skip_credential_files(tmp_path: Path) -> None:
    docs = project(tmp_path)
    with Index(tmp_path / "i.db", FakeEngine()) as index:
        index.add([docs])
        (docs / ".env.local").write_text(f"TOKEN={SECRET}\n")  # made while watching
        (docs / "backup.key").write_text(f"{SECRET}\n")
        (docs / ".ssh" / "id_rsa").write_text(f"{SECRET}\n")
        index.update([docs / ".env.local", docs / "backup.key", docs / ".ssh" / "id_rsa",
                      docs / ".ssh"], [docs])
        assert names(index, docs) == {"notes.md", ".env.example"}


def test_a_forged_index_cannot_make_mcp_get_read_credentials(tmp_path: Path) -> None:
    """The attacker writes the index file: it lists `/` as a root and a key, a `.env` and a
    file under `.ssh/` as documents (made here by naming the files, which indexes them as
    asked). MCP `get` reads from disk, so it must refuse them whatever the index says."""
    import pytest

    pytest.importorskip("mcp")
    from gguf_embed.errors import InputError
    from gguf_embed.mcp_server import Service

    docs = project(tmp_path)
    db = tmp_path / "forged.db"
    engine = FakeEngine()
    named = [docs / ".env", docs / "id_ed25519", docs / ".ssh" / "config", docs / "notes.md"]
    with Index(db, engine) as index:
        index.add(named)
        index.store.set_meta({"roots": ["/"]})  # the forged boundary
        assert {".env", "id_ed25519", ".ssh/config"} <= names(index, docs)
    service = Service(engine, db, model_name="fake")
    for victim in named[:3]:
        with pytest.raises(InputError, match="holds credentials") as caught:
            service.get(str(victim))
        assert SECRET not in str(caught.value)
    assert "deploy" in service.get(str(docs / "notes.md"))["text"]  # the rest is served
