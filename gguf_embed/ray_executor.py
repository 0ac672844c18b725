"""Embedding an index run on a Ray cluster: ``Index.add(paths, executor=RayExecutor(...))``.

The process that calls ``Index.add`` (the head) walks, extracts and chunks as in a local run
and is the one SQLite writer; only the embedding goes to Ray actors.  Each actor loads the model
once (resolved on its own node: its Hugging Face cache, or a path that exists there), takes one
GPU where the cluster has GPUs and ``cpus_per_actor`` CPU slots otherwise, and embeds whole
batches with :meth:`~gguf_embed.Engine.encode`.  ``in_flight`` batches per actor are queued so
that no actor waits for the head; vectors come back to the head, which writes each batch in
its own transaction, in the order the batches were made (the same code as a local run).

Crashes: an actor that dies is restarted by Ray (``max_restarts``) and its batches are run
again (``max_task_retries``); nothing is written before a batch's vectors are back, so nothing
is lost or written twice.  A killed head leaves committed batches; the next run goes on.

Ray is optional (``pip install "gguf-embed[ray]"``) and imported only when a run starts.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import errors
from .errors import (
    ClusterError,
    EngineError,
    GgufEmbedError,
    InputError,
    ModelError,
    first_line,
)
from .protocol import EmbeddingEngine, Embeddings

INSTALL_HINT = 'pip install "gguf-embed[ray]"'


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ClusterError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ClusterError(f"Ray is not installed; {INSTALL_HINT}") from exc
    return ray


def node_name() -> str:
    """This process's Ray node: its IP address and the start of its node ID."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return f"{ray.util.get_node_ip_address()} (node {node_id[:12]})"


class EmbedActor:
    """One model on one Ray node (created by :class:`RayExecutor`; Ray runs it remotely).

    A model that cannot be loaded is not raised here (Ray would not restart the actor and the
    head would see a bare traceback): it is kept and reported by :meth:`info` and every call.
    """

    def __init__(self, model: str, fingerprint: str, options: dict[str, Any]) -> None:
        self.node = node_name()
        self.engine: Any = None
        self.error: tuple[str, str] | None = None
        try:
            self.engine = self._load(model, fingerprint, options)
        except GgufEmbedError as exc:
            self.error = (type(exc).__name__, f"on Ray node {self.node}: {exc}")

    @staticmethod
    def _load(model: str, fingerprint: str, options: dict[str, Any]) -> Any:
        from .engine import Engine
        from .models import resolve_model

        resolved = resolve_model(model, offline=options.get("offline", False),
                                 cache_dir=options.get("cache_dir"), progress=False)
        engine = Engine(resolved, **options.get("engine", {}))
        if engine.fingerprint != fingerprint:
            engine.close()
            where = (f"{resolved.path} is" if str(resolved.path) == model
                     else f"{model} resolves to {resolved.path},")
            raise errors.ModelLoadError(
                f"{where} a different file here from the head's (another version or "
                f"quantization?): give every node the same model file")
        return engine

    def info(self) -> dict[str, Any]:
        engine = self.engine
        return {"node": self.node, "pid": os.getpid(), "error": self.error,
                "dims": engine.dims if engine else None,
                "gpu_layers": engine.n_gpu_layers if engine else None}

    def embed(self, texts: list[str], dimensions: int | None) -> dict[str, Any]:
        if self.engine is None:
            assert self.error is not None
            return {"error": self.error, "fatal": True}
        try:
            result = self.engine.encode(texts, dimensions=dimensions)
        except GgufEmbedError as exc:
            return {"error": (type(exc).__name__, f"{exc} (on Ray node {self.node})"),
                    "fatal": False}
        return {"vectors": result.vectors, "tokens": result.token_counts,
                "truncated": result.truncated}


class _RayJob:
    def __init__(self, executor: RayExecutor, ref: Any, actor: int) -> None:
        self.executor = executor
        self.ref = ref
        self.actor = actor

    def wait(self, timeout: float | None) -> bool:
        ready, _ = self.executor.ray.wait([self.ref], timeout=timeout)
        return bool(ready)

    def result(self) -> Embeddings:
        ray = self.executor.ray
        node = self.executor.nodes[self.actor]
        try:
            out = ray.get(self.ref)
        except ray.exceptions.RayActorError as exc:
            self.executor.stale = True  # the next start() makes new actors
            raise ClusterError(
                f"the Ray actor on {node} died and was not restarted in time "
                f"(max_restarts={self.executor.max_restarts}): {_why(exc)}; the "
                f"batches written so far are kept: run again to continue") from exc
        except ray.exceptions.RayError as exc:  # not one of ours: a bug, out of memory, ...
            raise ClusterError(f"embedding a batch failed on Ray node {node}: "
                               f"{_why(exc)}; the batches written so far are kept") from exc
        if "error" in out:
            name, message = out["error"]
            if out["fatal"]:
                raise ClusterError(message)
            kind = getattr(errors, name, EngineError)
            raise (InputError if issubclass(kind, InputError) else EngineError)(message)
        vectors = np.ascontiguousarray(out["vectors"], dtype=np.float32)
        return Embeddings(vectors, list(out["tokens"]), list(out["truncated"]))

    def cancel(self) -> None:
        with contextlib.suppress(Exception):  # already done, or the actor is gone
            self.executor.ray.cancel(self.ref)


class RayExecutor:
    """Embeds an index run's batches on Ray actors (see the module's docstring).

    ``address``: the cluster (``None``: Ray's default, i.e. ``RAY_ADDRESS`` or the cluster last
    started on this machine, else a new local one; ``"auto"``: an existing one only;
    ``"host:6379"`` or ``"ray://host:10001"``).  If Ray is already initialized in this process,
    that connection is used and left open.  ``model``: the reference each node resolves
    (default: the one the index records).  ``actors``: how many (default: one per GPU, else one
    per ``cpus_per_actor`` CPUs of the cluster).  ``gpus``: ``None`` uses GPUs when the
    cluster has some.  ``engine_options`` go to each actor's :class:`~gguf_embed.Engine`.

    Start-up (in the first ``Index.add``) raises :class:`~gguf_embed.errors.ModelError` naming
    the node that cannot load the model, or :class:`ClusterError`.  Actors live until
    :meth:`close` (a ``with`` block), so several ``add`` calls load the model once.
    """

    def __init__(self, address: str | None = None, *, model: str | None = None,
                 actors: int | None = None, cpus_per_actor: int = 1, gpus: bool | None = None,
                 in_flight: int = 2, max_restarts: int = 3, offline: bool = False,
                 cache_dir: str | None = None, engine_options: dict[str, Any] | None = None,
                 start_timeout: float = 600.0, init_options: dict[str, Any] | None = None
                 ) -> None:
        if actors is not None and actors < 1:
            raise InputError(f"actors must be 1 or more, got {actors}", param="actors")
        if cpus_per_actor < 1 or in_flight < 1:
            raise InputError("cpus_per_actor and in_flight must be 1 or more",
                             param="cpus_per_actor")
        self.address = address
        self.model = model
        self.actors = actors
        self.cpus_per_actor = cpus_per_actor
        self.gpus = gpus
        self.in_flight = in_flight
        self.max_restarts = max_restarts
        self.offline = offline
        self.cache_dir = cache_dir
        self.engine_options = dict(engine_options or {})
        self.start_timeout = start_timeout
        self.init_options = dict(init_options or {})
        self.ray: Any = None
        self.handles: list[Any] = []
        self.nodes: list[str] = []
        self.use_gpus = False
        self._fingerprint: str | None = None
        self._owns_ray = False
        self.stale = False  # an actor died for good: start afresh next time
        self._pending: list[tuple[int, Any]] = []  # (actor, ref) not known to be done

    @property
    def window(self) -> int:
        return max(1, self.in_flight * len(self.handles))

    def describe(self) -> str:
        """One line on the actors, e.g. for a CLI's stderr."""
        kind = "1 GPU" if self.use_gpus else f"{self.cpus_per_actor} CPU"
        return (f"{len(self.handles)} Ray actors ({kind} each) on "
                f"{len(set(self.nodes))} node(s), {self.window} batches in flight")

    # ------------------------------------------------------------------ start and stop
    def start(self, engine: EmbeddingEngine, model: str | None) -> None:
        if self.handles and self._fingerprint == engine.fingerprint and not self.stale:
            return  # the actors of an earlier add(), same model
        self._kill_actors()
        self.ray = ray = import_ray()
        self._connect()
        resources = ray.cluster_resources()
        n_gpus = int(resources.get("GPU", 0))
        self.use_gpus = n_gpus > 0 if self.gpus is None else self.gpus
        if self.use_gpus and not n_gpus:
            raise ClusterError(f"GPU actors were asked for, but the Ray cluster has "
                               f"{_free(resources)}: add GPU nodes, or leave gpus unset")
        count = self.actors or max(1, n_gpus if self.use_gpus
                                   else int(resources.get("CPU", 1)) // self.cpus_per_actor)
        ref = self.model or model or str(engine.path)
        options: dict[str, Any] = {"offline": self.offline, "cache_dir": self.cache_dir,
                                   "engine": {"n_threads": self.cpus_per_actor,
                                              **({} if self.use_gpus else {"n_gpu_layers": 0}),
                                              **self.engine_options}}
        remote = ray.remote(EmbedActor).options(
            num_cpus=self.cpus_per_actor, num_gpus=1 if self.use_gpus else 0,
            max_restarts=self.max_restarts, max_task_retries=self.max_restarts)
        self.handles = [remote.remote(ref, engine.fingerprint, options) for _ in range(count)]
        self._fingerprint = engine.fingerprint
        try:
            infos = ray.get([h.info.remote() for h in self.handles],
                            timeout=self.start_timeout)
        except ray.exceptions.GetTimeoutError as exc:
            self._kill_actors()
            need = "1 GPU" if self.use_gpus else f"{self.cpus_per_actor} CPU"
            raise ClusterError(
                f"{count} Ray actors ({need} each) did not start within "
                f"{self.start_timeout:.0f} s: the cluster has {_free(resources)}; ask for fewer "
                f"actors, or give the nodes time to download the model") from exc
        except ray.exceptions.RayError as exc:
            self._kill_actors()
            raise ClusterError(f"the Ray actors failed to start: {_why(exc)}") from exc
        self.nodes = [info["node"] for info in infos]
        self._check(infos, engine)

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        options = {"include_dashboard": False, "log_to_driver": False,
                   "logging_level": "warning", **self.init_options}
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"at {self.address}" if self.address else "here"
            raise ClusterError(
                f"cannot start or reach a Ray cluster {where}: {_why(exc)}; start one "
                f"with 'ray start --head' and pass its address") from exc
        self._owns_ray = True

    def _check(self, infos: list[dict[str, Any]], engine: EmbeddingEngine) -> None:
        failed = [info["error"] for info in infos if info["error"]]
        if failed:
            self._kill_actors()
            messages = list(dict.fromkeys(message for _, message in failed))
            kind = getattr(errors, failed[0][0], ModelError)
            if not issubclass(kind, ModelError):
                kind = ModelError
            raise kind("; ".join(messages))
        dims = {info["dims"] for info in infos}
        if dims != {engine.dims}:
            self._kill_actors()
            raise errors.ModelLoadError(f"the Ray actors' model has {sorted(dims)} dimensions; "
                                        f"the head's has {engine.dims}")

    def close(self) -> None:
        """Stop the actors; disconnect from (or stop) the Ray cluster if this started it."""
        self._kill_actors()
        if self._owns_ray and self.ray is not None:
            self.ray.shutdown()
            self._owns_ray = False

    def _kill_actors(self) -> None:
        for handle in self.handles:
            with contextlib.suppress(Exception):
                self.ray.kill(handle)
        self.handles, self.nodes, self._pending = [], [], []
        self._fingerprint = None
        self.stale = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ batches
    def submit(self, texts: Sequence[str], dimensions: int | None) -> _RayJob:
        if not self.handles:
            raise ClusterError("RayExecutor.start was not called (Index.add calls it)")
        if self._pending:  # forget the finished batches, to send this one to the least busy
            refs = [ref for _, ref in self._pending]
            _, waiting = self.ray.wait(refs, num_returns=len(refs), timeout=0)
            busy = set(waiting)
            self._pending = [(a, ref) for a, ref in self._pending if ref in busy]
        load = [0] * len(self.handles)
        for actor, _ in self._pending:
            load[actor] += 1
        actor = load.index(min(load))
        ref = self.handles[actor].embed.remote(list(texts), dimensions)
        self._pending.append((actor, ref))
        return _RayJob(self, ref, actor)

    def actor_pids(self) -> list[int]:
        """The process IDs of the actors now (tests kill one)."""
        return [int(info["pid"]) for info in
                self.ray.get([h.info.remote() for h in self.handles])]


def _free(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def _why(exc: BaseException) -> str:
    return first_line(exc, empty=type(exc).__name__)


__all__ = ["INSTALL_HINT", "EmbedActor", "RayExecutor", "import_ray"]
