"""One owner per concern: the model of an index decided by the library, one service object
behind the server (one read-only Index for its lifetime), the guard as reusable middleware,
and SQL only in the store modules (store.py, and store_*.py beside it)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import gguf_embed
from gguf_embed import DEFAULT_MODEL, Index, IndexFileError
from gguf_embed.http_guard import HostGuard
from gguf_embed.server import ServerConfig, create_app
from gguf_embed.testing import FakeEngine

URL = "http://127.0.0.1:8000"


def build(tmp_path: Path, model_ref: str | None = "my-model") -> Path:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "a.md").write_text("rotate the logs every week\n", encoding="utf-8")
    (docs / "b.md").write_text("green tea and gardens\n", encoding="utf-8")
    db = tmp_path / "i.db"
    with Index(db, FakeEngine(), model_ref=model_ref) as index:
        index.add([docs])
    return db


def test_model_for_is_decided_once_in_the_library(tmp_path: Path) -> None:
    db = build(tmp_path)
    assert Index.model_for(db) == "my-model"
    assert Index.model_for(db, "other") == "other"
    missing = tmp_path / "none.db"
    assert Index.model_for(missing) == DEFAULT_MODEL
    assert Index.model_for(missing, "other") == "other"
    with pytest.raises(IndexFileError, match="no index at"):
        Index.model_for(missing, "other", must_exist=True)
    assert not missing.exists()


def test_open_loads_the_recorded_model(tmp_path: Path) -> None:
    db = build(tmp_path)
    asked: list[str] = []

    def load(ref: str) -> FakeEngine:
        asked.append(ref)
        return FakeEngine()

    with Index.open(db, load=load, readonly=True) as index:
        assert [Path(h.path).name for h in index.search("rotate logs", k=1)] == ["a.md"]
    assert asked == ["my-model"]
    with Index.open(db, "given", load=load) as index:
        assert index.meta["model"] == "my-model"  # same engine identity: the index is kept
    assert asked == ["my-model", "given"]
    with Index.open(db, load=load, reindex=True) as index:  # a rebuild keeps its model
        assert index.meta["model"] == "my-model"
    assert asked[-1] == "my-model"


def test_server_holds_one_index_and_reopens_it_after_a_rebuild(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = build(tmp_path)
    opened: list[bool] = []
    real_init = Index.__init__

    def counting_init(self: Index, *args: object, **kwargs: object) -> None:
        opened.append(bool(kwargs.get("readonly")))
        real_init(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Index, "__init__", counting_init)
    engine = FakeEngine()
    app = create_app(engine, ServerConfig(model_name="fake", index_path=str(db),
                                          batch_window=0))
    with TestClient(app, base_url=URL) as client:
        for _ in range(3):
            body = client.post("/v1/search", json={"query": "rotate logs", "k": 1}).json()
            assert Path(body["data"][0]["path"]).name == "a.md"
        assert opened == [True]  # one read-only Index for every request
        with Index(db, engine, reindex=True) as index:  # rebuilt while serving
            (tmp_path / "docs" / "c.md").write_text("rotate logs daily with logrotate\n")
            index.add([tmp_path / "docs"])
        body = client.post("/v1/search", json={"query": "logrotate", "k": 1}).json()
        assert Path(body["data"][0]["path"]).name == "c.md"
        assert opened == [True, False, True]
        service = app.state.service
    assert service._index is None  # closed with the app


def test_guard_is_reusable_middleware() -> None:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = HostGuard(Starlette(routes=[Route("/", hello)]), host="127.0.0.1", port=8000,
                    api_key="k")
    client = TestClient(app, base_url=URL)
    assert client.get("/", headers={"authorization": "Bearer k"}).text == "hi"
    refused = client.get("/")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_api_key"
    rebinding = client.get("/", headers={"host": "evil.example",
                                         "authorization": "Bearer k"})
    assert rebinding.status_code == 403
    assert rebinding.json()["error"]["code"] == "forbidden_host"
    assert client.get("/", headers={"origin": "http://evil.example",
                                    "authorization": "Bearer k"}).status_code == 403
    assert client.get("/", headers={"host": "127.0.0.1:abc"}).status_code == 400


def test_sql_lives_in_store_only() -> None:
    package = Path(gguf_embed.__file__).parent
    sql = re.compile(r"\.execute(many)?\(|\b(SELECT|INSERT|DELETE|UPDATE)\s+[\w*(]")
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if p.name != "store.py" and not p.name.startswith("store_")
                 and sql.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_open_closes_the_engine_it_loaded(tmp_path: Path) -> None:
    db = build(tmp_path)
    closed: list[bool] = []

    class Closing(FakeEngine):
        def close(self) -> None:
            closed.append(True)

    with Index.open(db, load=lambda ref: Closing(), readonly=True):
        assert closed == []
    assert closed == [True]
    given = Closing()
    with Index(db, given, readonly=True):
        pass
    assert closed == [True]  # an engine the caller gave is the caller's to close
