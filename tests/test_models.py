"""Model references, the catalog, and downloads through a fake hub on 127.0.0.1."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest

from gguf_embed import CATALOG, DEFAULT_MODEL, ModelError, ModelNotFound, ModelSpec, resolve_model
from gguf_embed.models import parse_ref, spec_for_file

from .fakehub import FakeHub

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_catalog_entries_are_complete() -> None:
    assert DEFAULT_MODEL == "qwen3-embedding-4b"
    default = CATALOG[DEFAULT_MODEL]
    assert default.repo == "Qwen/Qwen3-Embedding-4B-GGUF"
    assert default.file == "Qwen3-Embedding-4B-Q4_K_M.gguf"
    assert (default.dims, default.pooling, default.eos) == (2560, "last", True)
    assert default.n_ctx == 32768
    assert default.matryoshka_min == 32
    assert default.format_query("q", "T") == "Instruct: T\nQuery:q"  # no space after Query:
    assert default.format_document("d") == "d"
    assert {"qwen3-embedding-0.6b", "qwen3-embedding-8b"} <= set(CATALOG)
    assert any(s.pooling in ("mean", "cls") for s in CATALOG.values())  # BERT family
    assert any("gemma" in name for name in CATALOG)
    for spec in CATALOG.values():
        assert spec.repo and spec.file.endswith(".gguf") and spec.revision
        if spec.kind == "reranker":  # scores, not vectors
            assert spec.pooling == "rank" and spec.dims is None and spec.n_ctx
            continue
        assert spec.kind == "embedding"
        assert spec.dims and spec.pooling in ("last", "mean", "cls") and spec.n_ctx
        assert "{text}" in spec.query_prompt and "{text}" in spec.document_prompt
        if spec.sha256:
            assert len(spec.sha256) == 64


def test_parse_ref_forms(tmp_path: Path) -> None:
    assert parse_ref("Qwen3-Embedding-4B") is CATALOG["qwen3-embedding-4b"]
    hub = parse_ref("someone/some-GGUF:model-f16.gguf@" + COMMIT)
    assert isinstance(hub, ModelSpec)
    assert (hub.repo, hub.file, hub.revision) == ("someone/some-GGUF", "model-f16.gguf", COMMIT)
    local = tmp_path / "m.gguf"
    assert parse_ref(str(local)) == local
    with pytest.raises(ModelNotFound, match="unknown model 'bogus'"):
        parse_ref("bogus")


def test_local_path_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="model file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_local_file_gets_catalog_spec_by_name(tmp_path: Path) -> None:
    path = tmp_path / "Qwen3-Embedding-0.6B-Q8_0.gguf"
    path.write_bytes(b"GGUF")
    resolved = resolve_model(str(path))
    assert resolved.source == "path" and resolved.spec.name == "qwen3-embedding-0.6b"
    assert spec_for_file(tmp_path / "other.gguf").repo is None


@pytest.fixture
def hub_file(qwen_path: Path):
    spec = ModelSpec(name="tiny", repo="test/tiny-GGUF", file="tiny-qwen3-q8_0.gguf",
                     revision=COMMIT, dims=256)
    source = qwen_path.parent / spec.file
    with FakeHub(commit=COMMIT) as hub:
        hub.add(spec.repo, spec.file, source)
        yield hub, replace(spec, sha256=hashlib.sha256(source.read_bytes()).hexdigest()), source


def test_download_then_cache_without_network(hub_file, tmp_path: Path) -> None:
    hub, spec, source = hub_file
    cache = tmp_path / "hf"
    first = resolve_model(spec, cache_dir=cache, endpoint=hub.url, progress=False)
    assert first.source == "download"
    assert first.path.read_bytes() == source.read_bytes()
    assert str(first.path).startswith(str(cache))  # the standard HF cache layout
    assert any(r.startswith("GET ") for r in hub.requests)
    seen = len(hub.requests)
    again = resolve_model(spec, cache_dir=cache, endpoint=hub.url, progress=False)
    assert again.source == "cache" and again.path == first.path
    assert len(hub.requests) == seen  # a cached pinned file costs no network call
    offline = resolve_model(spec, cache_dir=cache, offline=True, endpoint="http://127.0.0.1:9")
    assert offline.path == first.path


def test_owner_repo_file_reference_downloads(hub_file, tmp_path: Path) -> None:
    hub, spec, _ = hub_file
    ref = f"{spec.repo}:{spec.file}@{COMMIT}"
    resolved = resolve_model(ref, cache_dir=tmp_path, endpoint=hub.url, progress=False)
    assert resolved.path.name == spec.file and resolved.source == "download"


def test_offline_and_not_cached_names_the_file(hub_file, tmp_path: Path) -> None:
    hub, spec, _ = hub_file
    with pytest.raises(ModelNotFound) as info:
        resolve_model(spec, cache_dir=tmp_path, offline=True, endpoint=hub.url)
    message = str(info.value)
    assert spec.file in message and "--model" in message and "\n" not in message
    assert hub.requests == []


def test_unreachable_hub_is_a_clear_error(tmp_path: Path) -> None:
    spec = ModelSpec(name="x", repo="test/x-GGUF", file="x.gguf", revision=COMMIT)
    with pytest.raises(ModelNotFound, match=r"cannot download x\.gguf"):
        resolve_model(spec, cache_dir=tmp_path, endpoint="http://127.0.0.1:9", progress=False)


def test_missing_file_on_hub(hub_file, tmp_path: Path) -> None:
    hub, spec, _ = hub_file
    with pytest.raises(ModelNotFound, match="cannot download"):
        resolve_model(replace(spec, file="absent.gguf"), cache_dir=tmp_path, endpoint=hub.url,
                      progress=False)


def test_sha256_mismatch_is_refused(hub_file, tmp_path: Path) -> None:
    hub, spec, _ = hub_file
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve_model(replace(spec, sha256="0" * 64), cache_dir=tmp_path, endpoint=hub.url,
                      progress=False)
