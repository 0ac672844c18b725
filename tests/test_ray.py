"""``--ray``: a real local Ray cluster (2 CPUs, started once for the module) embeds with MiniLM
while this process chunks and writes.  The index equals a local one; a killed actor is
restarted and its batch retried; a killed driver's run is finished by the next; a node that
cannot load the model is named."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray  # the [ray] extra: CI installs it, and these tests need it
from click.testing import CliRunner

from gguf_embed import ClusterError, Engine, ModelLoadError, ModelNotFound
from gguf_embed.cli import cli
from gguf_embed.index import Index
from gguf_embed.indexer import Progress
from gguf_embed.ray_executor import RayExecutor

from .test_crash import wait_for_a_commit
from .test_index import orphans, rows

BATCH = 6  # chunks per batch: a small corpus still makes many batches
INDEX = (f"import sys, gguf_embed.indexer as i; i.BATCH_CHUNKS = {BATCH}; "
         "sys.argv[0] = 'gguf-embed'; from gguf_embed.cli import main; main()")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning",
             object_store_memory=100 * 2**20)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory, corpora: Path) -> Path:
    folder = tmp_path_factory.mktemp("ray") / "docs"
    folder.mkdir()
    pages = corpora / "tldr-linux" / "pages"
    for name in sorted(os.listdir(pages))[100:130]:
        shutil.copy(pages / name, folder / name)
    return folder


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gguf_embed.indexer.BATCH_CHUNKS", BATCH)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, docs: Path, minilm: Engine) -> tuple:
    """The same corpus indexed here, without Ray (rows and vectors)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gguf_embed.indexer.BATCH_CHUNKS", BATCH)
        with Index(tmp_path_factory.mktemp("local") / "local.db", minilm) as index:
            summary = index.add([docs])
            return summary, rows(index), vectors(index)


def vectors(index: Index) -> dict[tuple[str, int], np.ndarray]:
    return {(p, s): np.frombuffer(v, dtype=np.float32) for p, s, v in index.store.conn.execute(
        "SELECT d.path, c.seq, v.embedding FROM chunks c JOIN documents d ON d.id = c.doc_id "
        "JOIN chunk_vectors v ON v.chunk_id = c.id")}


def assert_same_as_local(db: Path, minilm_path: Path, local: tuple) -> None:
    _, local_rows, local_vectors = local
    with Engine(minilm_path, vocab_only=True) as head, Index(db, head) as index:
        got_rows, got_vectors = rows(index), vectors(index)
        assert not any(orphans(index).values()), orphans(index)
        (check,), = index.store.conn.execute("PRAGMA integrity_check")
        assert check == "ok"
    assert got_rows == local_rows  # same documents, chunks, lines and texts; none twice
    assert len(got_rows) == len(set(got_rows)) and got_vectors.keys() == local_vectors.keys()
    worst = min(float(np.dot(v, local_vectors[k])) for k, v in got_vectors.items())
    assert worst >= 1 - 1e-5, worst


def test_a_ray_run_equals_a_local_run(cluster: str, tmp_path: Path, docs: Path,
                                      minilm_path: Path, local: tuple) -> None:
    db = tmp_path / "ray.db"
    with RayExecutor() as executor, Engine(minilm_path, vocab_only=True) as head, \
            Index(db, head, model_ref=str(minilm_path)) as index:
        summary = index.add([docs], executor=executor)
        assert len(executor.handles) == 2 and executor.window == 4  # one per CPU, 2 each
        assert not executor.use_gpus
    want = local[0]
    for key in ("added", "chunks", "chunks_reused", "tokens_embedded", "failed", "skipped"):
        assert getattr(summary, key) == getattr(want, key), key
    assert summary.added == 30 and not summary.failed
    assert_same_as_local(db, minilm_path, local)


def test_a_killed_actor_is_restarted_and_its_batch_retried(cluster: str, tmp_path: Path,
                                                            docs: Path, minilm_path: Path,
                                                            local: tuple) -> None:
    db = tmp_path / "ray.db"
    killed: list[int] = []
    with RayExecutor() as executor, Engine(minilm_path, vocab_only=True) as head, \
            Index(db, head, model_ref=str(minilm_path)) as index:
        executor.start(head, str(minilm_path))  # add() keeps these actors (same model)
        before = executor.actor_pids()

        def kill_one(progress: Progress) -> None:
            if progress.chunks and not killed:  # after a commit, with batches queued
                os.kill(before[0], signal.SIGKILL)
                killed.append(before[0])

        summary = index.add([docs], executor=executor, progress=kill_one)
        after = executor.actor_pids()
    assert killed and after[0] != before[0] and after[1] == before[1]
    assert summary.added == 30 and not summary.failed
    assert_same_as_local(db, minilm_path, local)


def test_an_actor_that_dies_for_good_ends_the_run_and_a_rerun_completes(
        cluster: str, tmp_path: Path, docs: Path, minilm_path: Path, local: tuple) -> None:
    db = tmp_path / "ray.db"
    with RayExecutor(max_restarts=0) as executor, \
            Engine(minilm_path, vocab_only=True) as head, \
            Index(db, head, model_ref=str(minilm_path)) as index:
        executor.start(head, str(minilm_path))
        pid = executor.actor_pids()[0]
        node = executor.nodes[0]

        def kill_one(progress: Progress) -> None:
            if progress.chunks:  # after a commit
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

        with pytest.raises(ClusterError, match=rf"the Ray actor on {re.escape(node)} died"):
            index.add([docs], executor=executor, progress=kill_one)
        kept = len({r[0] for r in rows(index)})
        assert 0 < kept < 30 and not any(orphans(index).values())
        summary = index.add([docs], executor=executor)  # new actors, the rest of the files
        assert executor.actor_pids()[0] != pid
    assert summary.added == 30 - kept and not summary.failed
    assert_same_as_local(db, minilm_path, local)


def test_the_cli_prints_only_its_summary_on_stdout_when_an_actor_dies(
        cluster: str, tmp_path: Path, docs: Path, minilm_path: Path, local: tuple,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray prints a dead actor's report on stdout; the CLI sends it to stderr."""
    start, submit = RayExecutor.start, RayExecutor.submit
    pids: list[int] = []

    def start_and_note(self: RayExecutor, *args: object) -> None:
        start(self, *args)  # type: ignore[arg-type]
        pids[:] = self.actor_pids()

    def submit_and_kill(self: RayExecutor, *args: object) -> object:
        if len(self._pending) and pids:  # a batch is on its way: kill an actor, once
            os.kill(pids.pop(0), signal.SIGKILL)
        return submit(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RayExecutor, "start", start_and_note)
    monkeypatch.setattr(RayExecutor, "submit", submit_and_kill)
    db = tmp_path / "ray.db"
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(db), "-m",
                                      str(minilm_path), "--json", "--ray", cluster])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 30 and not pids
    assert_same_as_local(db, minilm_path, local)


def test_a_killed_driver_then_a_rerun_completes(cluster: str, tmp_path: Path, docs: Path,
                                                minilm_path: Path, local: tuple) -> None:
    db = tmp_path / "ray.db"
    command = [sys.executable, "-c", INDEX, "index", str(docs), "--db", str(db), "-m",
               str(minilm_path), "--progress", "--json", "--ray", cluster]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_a_commit(first)
    first.kill()
    first.communicate()
    assert first.returncode == -signal.SIGKILL
    with Engine(minilm_path, vocab_only=True) as head, Index(db, head) as index:
        kept = len({r[0] for r in rows(index)})
        assert not any(orphans(index).values())
    assert 0 < kept < 30  # killed mid-run, after a commit
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "embedding on 2 Ray actors" in rerun.stderr
    assert json.loads(rerun.stdout)["added"] == 30 - kept
    assert_same_as_local(db, minilm_path, local)


def test_a_node_that_cannot_load_the_model_is_named(cluster: str, tmp_path: Path,
                                                    minilm_path: Path, qwen_path: Path) -> None:
    node = ray.get_runtime_context().get_node_id()[:12]
    with Engine(minilm_path, vocab_only=True) as head, \
            Index(tmp_path / "ray.db", head, model_ref=str(minilm_path)) as index:
        missing = tmp_path / "nowhere" / "model.gguf"
        with RayExecutor(model=str(missing)) as executor, \
                pytest.raises(ModelNotFound, match=rf"on Ray node [\d.]+ \(node {node}\): "
                                                   rf"model file not found: {missing}"):
            index.add([tmp_path], executor=executor)
        assert not executor.handles  # the actors were stopped
        with RayExecutor(model=str(qwen_path)) as executor, \
                pytest.raises(ModelLoadError, match=rf"node {node}\): {qwen_path} is a "
                                                    rf"different file here from the head's"):
            index.add([tmp_path], executor=executor)
        assert index.store.counts()["documents"] == 0


def test_gpu_actors_on_a_cluster_without_gpus_are_refused(cluster: str, tmp_path: Path,
                                                         minilm_path: Path) -> None:
    with Engine(minilm_path, vocab_only=True) as head, \
            Index(tmp_path / "ray.db", head, model_ref=str(minilm_path)) as index, \
            RayExecutor(gpus=True) as executor, \
            pytest.raises(ClusterError, match="the Ray cluster has 2 CPU, 0 GPU"):
        index.add([tmp_path], executor=executor)


def test_without_ray_the_cli_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path, docs: Path,
                                                    minilm_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails
    result = CliRunner().invoke(cli, ["index", str(docs), "--db", str(tmp_path / "x.db"),
                                      "-m", str(minilm_path), "--ray"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == 'Error: Ray is not installed; pip install "gguf-embed[ray]"\n'
    assert not (tmp_path / "x.db").exists()


def test_a_path_after_ray_is_not_taken_for_an_address(tmp_path: Path, docs: Path) -> None:
    result = CliRunner().invoke(cli, ["index", "--ray", str(docs), "--db",
                                      str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "put --ray after the paths" in result.stderr


def test_importing_gguf_embed_does_not_import_ray() -> None:
    code = ("import sys, gguf_embed, gguf_embed.index, gguf_embed.ray_executor, gguf_embed.cli;"
            " print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
