"""Known GGUF embedding models, and resolving a model reference to a local file.

A reference is one of:
  * a path to a local ``.gguf`` file;
  * a catalog name (``qwen3-embedding-4b``; see :data:`CATALOG`);
  * ``owner/repo:file.gguf`` (optionally ``owner/repo:file.gguf@revision``) on the Hugging Face hub.

Hub files go through ``huggingface_hub`` into the standard Hugging Face cache so other tools
share them.  A cached file is used without any network call; ``offline=True`` never touches the
network.
"""

from __future__ import annotations

import functools
import itertools
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ModelError, ModelNotFound, first_line, quoted

QWEN3_QUERY = "Instruct: {task}\nQuery:{text}"
QWEN3_TASK = "Given a web search query, retrieve relevant passages that answer the query"
BGE_QUERY = "Represent this sentence for searching relevant passages: {text}"


@dataclass(frozen=True)
class ModelSpec:
    """What gguf-embed needs to know to embed correctly with one GGUF file."""

    name: str
    repo: str | None
    file: str
    revision: str = "main"
    sha256: str | None = None
    size: int | None = None
    dims: int | None = None
    pooling: str | None = None  # "last", "mean" or "cls"; None: what the GGUF says
    eos: bool = False  # the input must end with the EOS token (appended as a token id)
    eos_token: str | None = None  # the literal special token to end with, e.g. "<|endoftext|>"
    query_prompt: str = "{text}"
    document_prompt: str = "{text}"
    default_task: str = ""
    n_ctx: int | None = None
    matryoshka_min: int | None = None  # smallest trained size; None: not trained for cutting
    description: str = ""
    kind: str = "embedding"  # or "reranker": a rank-pooling cross-encoder (see reranker.py)

    @property
    def hub_ref(self) -> str | None:
        return f"{self.repo}:{self.file}" if self.repo else None

    def format_query(self, text: str, task: str | None = None) -> str:
        prompt = self.query_prompt.replace("{task}", task or self.default_task)
        return prompt.replace("{text}", text)

    def format_document(self, text: str) -> str:
        return self.document_prompt.replace("{text}", text)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _qwen3(size: str, file: str, dims: int, revision: str = "main",
           sha256: str | None = None) -> ModelSpec:
    return ModelSpec(
        name=f"qwen3-embedding-{size.lower()}",
        repo=f"Qwen/Qwen3-Embedding-{size}-GGUF",
        file=file,
        revision=revision,
        sha256=sha256,
        dims=dims,
        pooling="last",
        eos=True,
        eos_token="<|endoftext|>",
        query_prompt=QWEN3_QUERY,
        default_task=QWEN3_TASK,
        n_ctx=32768,
        matryoshka_min=32,
        description=f"Qwen3-Embedding-{size}, multilingual, 32k context, instruction-aware",
    )


CATALOG: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _qwen3("4B", "Qwen3-Embedding-4B-Q4_K_M.gguf", 2560),
        _qwen3("0.6B", "Qwen3-Embedding-0.6B-Q8_0.gguf", 1024,
               revision="370f27d7550e0def9b39c1f16d3fbaa13aa67728",
               sha256="06507c7b42688469c4e7298b0a1e16deff06caf291cf0a5b278c308249c3e439"),
        _qwen3("8B", "Qwen3-Embedding-8B-Q4_K_M.gguf", 4096),
        ModelSpec(
            name="embeddinggemma-300m", repo="ggml-org/embeddinggemma-300M-GGUF",
            file="embeddinggemma-300M-Q8_0.gguf", dims=768, pooling="mean",
            query_prompt="task: search result | query: {text}",
            document_prompt="title: none | text: {text}", n_ctx=2048, matryoshka_min=128,
            description="Google EmbeddingGemma 300M, multilingual, 2k context",
        ),
        ModelSpec(
            name="nomic-embed-text-v1.5", repo="nomic-ai/nomic-embed-text-v1.5-GGUF",
            file="nomic-embed-text-v1.5.Q8_0.gguf", dims=768, pooling="mean",
            query_prompt="search_query: {text}", document_prompt="search_document: {text}",
            n_ctx=2048, matryoshka_min=64,
            description="Nomic Embed v1.5 (BERT family), English, 2k context",
        ),
        ModelSpec(
            name="bge-small-en-v1.5", repo="CompendiumLabs/bge-small-en-v1.5-gguf",
            file="bge-small-en-v1.5-q8_0.gguf",
            sha256="ec38e8da142596baa913124ae50550de284b6916bf59577ef2f0cb9660c2f514",
            dims=384, pooling="cls", query_prompt=BGE_QUERY, n_ctx=512,
            description="BAAI bge-small-en-v1.5 (BERT family), English, small and fast",
        ),
        ModelSpec(
            name="mxbai-embed-large-v1", repo="ChristianAzinn/mxbai-embed-large-v1-gguf",
            file="mxbai-embed-large-v1.Q8_0.gguf", dims=1024, pooling="cls",
            query_prompt=BGE_QUERY, n_ctx=512,
            description="mixedbread mxbai-embed-large-v1 (BERT family), English",
        ),
        # Rerankers (kind="reranker", pooling "rank"): llama.cpp runs the classification head
        # and returns one score per (query, passage) pair; the pair format is in reranker.py.
        # Both architectures are checked against transformers in tests/test_reranker.py.
        ModelSpec(
            # Qwen3ForCausalLM; llama.cpp's converter keeps the "yes"/"no" rows of lm_head as
            # cls.output and softmaxes them, so the score is P(yes) as in the model card.
            name="qwen3-reranker-0.6b", repo="ggml-org/Qwen3-Reranker-0.6B-Q8_0-GGUF",
            file="qwen3-reranker-0.6b-q8_0.gguf", pooling="rank", n_ctx=32768,
            kind="reranker",
            description="Qwen3-Reranker-0.6B, multilingual cross-encoder (score: P(yes))",
        ),
        ModelSpec(
            # XLMRobertaForSequenceClassification: its head (classifier.dense + out_proj)
            # survives llama.cpp's converter, unlike a BERT cross-encoder's pooler.
            name="bge-reranker-base", repo="xinming0111/bge-reranker-base-Q8_0-GGUF",
            file="bge-reranker-base-q8_0.gguf", pooling="rank", n_ctx=512, kind="reranker",
            description="BAAI bge-reranker-base (XLM-R), English/Chinese cross-encoder, fast "
                        "on a CPU (score: a logit)",
        ),
        ModelSpec(
            name="all-minilm-l6-v2", repo="second-state/All-MiniLM-L6-v2-Embedding-GGUF",
            file="all-MiniLM-L6-v2-Q8_0.gguf", dims=384, pooling="mean", n_ctx=512,
            description="sentence-transformers all-MiniLM-L6-v2, English, tiny",
        ),
    )
}

DEFAULT_MODEL = "qwen3-embedding-4b"
DEFAULT_RERANKER = "bge-reranker-base"  # fastest on a CPU; see BENCHMARKS.md (reranking)

_HUB_REF = re.compile(r"^(?P<repo>[\w.-]+/[\w.-]+):(?P<file>[^@]+\.gguf)(?:@(?P<rev>[\w.-]+))?$")


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference resolved to a local file, with what we know about it."""

    path: Path
    spec: ModelSpec
    source: str  # "path", "cache" or "download"


def spec_for_file(path: Path) -> ModelSpec:
    """The catalog spec whose file name matches ``path``, or a bare spec for an unknown file."""
    for spec in CATALOG.values():
        if spec.file.lower() == path.name.lower():
            return spec
    return ModelSpec(name=path.stem, repo=None, file=path.name)


def parse_ref(ref: str) -> ModelSpec | Path:
    """Turn a reference into a catalog/hub spec, or a local path."""
    key = ref.strip()
    if key.lower() in CATALOG:
        return CATALOG[key.lower()]
    match = _HUB_REF.match(key)
    if match and not Path(key).exists():
        file = match["file"]
        base = spec_for_file(Path(file))
        return replace(base, name=key, repo=match["repo"], file=file,
                       revision=match["rev"] or (base.revision if base.repo == match["repo"]
                                                 else "main"),
                       sha256=base.sha256 if base.repo == match["repo"] else None)
    path = Path(key).expanduser()
    if path.suffix.lower() == ".gguf" or path.exists() or "/" in key or "\\" in key:
        return path
    names = ", ".join(CATALOG)
    raise ModelNotFound(
        f"unknown model {quoted(repr(ref))}: pass a path to a .gguf file, owner/repo:file.gguf, "
        f"or one of: {names}"
    )


def _ggufs_in(folder: Path) -> str:
    """`` (it holds a.gguf, b.gguf)``: a few of the .gguf files in ``folder``, if any."""
    try:
        names = sorted(p.name for p in itertools.islice(folder.glob("*.gguf"), 100))[:3]
    except OSError:
        return ""
    return f" (it holds {', '.join(quoted(n, 80) for n in names)})" if names else ""


def resolve_model(
    ref: str | ModelSpec,
    *,
    cache_dir: str | Path | None = None,
    offline: bool = False,
    endpoint: str | None = None,
    progress: bool = True,
    verify: bool = False,
    token: str | bool | None = None,
) -> ResolvedModel:
    """Resolve ``ref`` to a local GGUF file, downloading it into the HF cache if needed.

    ``verify`` checks the sha256 of a cached file too (a fresh download is always checked when
    the catalog knows its hash).
    """
    target = parse_ref(ref) if isinstance(ref, str) else ref
    if isinstance(target, Path):
        if target.is_dir():
            raise ModelNotFound(f"{quoted(target)} is a folder, not a model file: pass the path "
                                f"of a .gguf file{_ggufs_in(target)}")
        if not target.is_file():
            raise ModelNotFound(
                f"model file not found: {target}; pass an existing .gguf file or a catalog name"
            )
        return ResolvedModel(target, spec_for_file(target), "path")
    spec = target
    assert spec.repo is not None
    cached = _hub_download(spec, cache_dir=cache_dir, endpoint=endpoint, token=token,
                           progress=False, local_only=True)
    if cached is not None:
        if verify:
            check_sha256(cached, spec)
        return ResolvedModel(cached, spec, "cache")
    where = f"{spec.file} ({spec.repo}@{spec.revision})"
    if offline:
        raise ModelNotFound(
            f"model file {where} is not in the Hugging Face cache and downloads are off "
            f"(offline); run 'gguf-embed models pull {spec.name}' with network access, "
            f"or pass --model /path/to/model.gguf"
        )
    path = _hub_download(spec, cache_dir=cache_dir, endpoint=endpoint, token=token,
                         progress=progress, local_only=False)
    assert path is not None
    check_sha256(path, spec)
    return ResolvedModel(path, spec, "download")


def _hub_download(spec: ModelSpec, *, cache_dir: str | Path | None, endpoint: str | None,
                  token: str | bool | None, progress: bool, local_only: bool) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    kwargs: dict[str, Any] = {}
    if not progress:
        kwargs["tqdm_class"] = _silent_tqdm()
    try:
        path = hf_hub_download(
            repo_id=spec.repo or "", filename=spec.file, revision=spec.revision,
            cache_dir=str(cache_dir) if cache_dir else None, endpoint=endpoint,
            local_files_only=local_only, token=token, **kwargs,
        )
    except LocalEntryNotFoundError as exc:
        if local_only:
            return None
        raise ModelNotFound(
            f"cannot download {spec.file} ({spec.repo}@{spec.revision}): no connection to the "
            f"hub; pass --model /path/to/model.gguf or try again online"
        ) from exc
    except Exception as exc:  # network and hub errors come in many types; name it and go on
        if local_only:
            return None
        raise ModelNotFound(
            f"cannot download {spec.file} ({spec.repo}@{spec.revision}): "
            f"{type(exc).__name__}: {first_line(exc)}; check the name, or pass --model PATH"
        ) from exc
    return Path(str(path))


def check_sha256(path: Path, spec: ModelSpec) -> None:
    """Raise :class:`ModelError` when ``path`` does not have the catalog's sha256."""
    if not spec.sha256:
        return
    digest = file_sha256(path)
    if digest != spec.sha256.lower():
        raise ModelError(
            f"sha256 mismatch for {path}: expected {spec.sha256}, got {digest}; "
            f"delete the file and pull it again"
        )


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    import hashlib  # here and below: a keyword search never loads OpenSSL

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@functools.cache
def _silent_tqdm() -> type:
    from tqdm.auto import tqdm

    class Silent(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            kwargs.pop("name", None)
            super().__init__(*args, **kwargs)

    return Silent


def file_fingerprint(path: Path, head: int = 1 << 20) -> str:
    """A fast identity for a model file: sha256 of its size and first MiB (the GGUF header
    and the first tensors), so an index can refuse a different model without hashing GBs."""
    import hashlib

    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(head))
    return h.hexdigest()
