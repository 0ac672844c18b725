"""Checks of the installation and of a model: what llama.cpp was built with, what SQLite can
load, and a self-test that embeds fixed texts and compares them with reference vectors stored
for that model (a broken build, such as llama.cpp #20824's AMX miscompile, fails it).

Two kinds of reference, both JSON with ``texts``, ``vectors``, ``query`` and ``query_vector``:

* one bound to a model *file* by its ``fingerprint``, written with :func:`write_reference` from a
  run on a build you trust and kept beside the model (``MODEL.gguf.reference.json``); it must
  match to a cosine of 0.999;
* one for a catalog *model*, shipped in ``gguf_embed/references/NAME.json`` and made from the
  reference implementation on the original weights (``scripts/make_reference.py``); it applies
  to every GGUF of that model, so the cosine it must reach depends on the file's quantization.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from . import _llama
from ._context import POOLING_NAMES

SELF_TEST_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I list hidden files in a directory?",
    "Grüße aus Köln — 日本語のテキスト",
]
SELF_TEST_QUERY = "find large files on disk"
MIN_COSINE = 0.999
REFERENCES = Path(__file__).resolve().parent / "references"
CPU_FLAGS_SHOWN = frozenset({"avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw",
                             "avx512vbmi", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8",
                             "amx_bf16"})

# general.file_type -> the cosine a quantized GGUF must reach against the original model's
# vectors (F32/F16/BF16 keep MIN_COSINE); measured with all-MiniLM-L6-v2 Q8_0: 0.9995
_QUANT_MIN_COSINE = {
    7: 0.995,                                  # Q8_0
    8: 0.99, 9: 0.99, 16: 0.99, 17: 0.99, 18: 0.99,  # Q5_0, Q5_1, Q5_K_S, Q5_K_M, Q6_K
    2: 0.98, 3: 0.98, 14: 0.98, 15: 0.98, 25: 0.98, 30: 0.98,  # 4-bit
}


def environment() -> dict[str, Any]:
    """llama.cpp build and devices, SQLite, sqlite-vec and APSW, and whether extensions load."""
    import apsw
    import llama_cpp
    import sqlite_vec

    from .store import probe_extensions

    cpu = _llama.cpu_backend()  # loads the backends first, so what follows sees them
    flags = _llama.cpu_flags()
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "llama_cpp_python": llama_cpp.__version__,
        "cpu_backend": cpu["variant"],
        "cpu_backend_library": cpu["library"],
        "cpu_backend_features": " ".join(cpu["features"]),
        # the CPU's own vector/matrix instruction sets, beside what the kernels were built for
        "cpu_flags": " ".join(sorted(flags & CPU_FLAGS_SHOWN)) if flags is not None
        else "unknown (no /proc/cpuinfo)",
        "extra_buffer_types": _llama.use_extra_bufts()[1],
        "llama_cpp_system_info": _llama.system_info().strip(),
        "gpu_offload": _llama.supports_gpu_offload(),
        "devices": _llama.devices(),
        "physical_cores": _llama.physical_cores(),
        "apsw": apsw.apsw_version(),
        "sqlite": apsw.sqlite_lib_version(),
        "sqlite_vec_package": getattr(sqlite_vec, "__version__", None),
    }
    try:
        info["sqlite_vec"] = probe_extensions()
        info["extensions_load"] = True
        info["fts5"] = True
    except Exception as exc:  # report, never crash: this is the diagnosis
        info["extensions_load"] = False
        info["extension_error"] = f"{type(exc).__name__}: {exc}"
    return info


def model_report(engine: Any) -> dict[str, Any]:
    keys = ("general.architecture", "general.name", "general.file_type",
            "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.add_eos_token")
    arch = engine.arch
    meta = {k: engine.metadata.get(k) for k in keys if k in engine.metadata}
    meta.update({k: v for k, v in engine.metadata.items()
                 if k.startswith(f"{arch}.") and not k.endswith(("_table", ".tokens"))})
    return {**engine.info(), "metadata": meta, "warnings": model_warnings(engine)}


def model_warnings(engine: Any) -> list[str]:
    """What in the file disagrees with how it is used: a GGUF whose pooling says ``none`` or
    ``rank`` (a converted chat model or a reranker) is embedded with the pooling shown."""
    value = str(engine.metadata.get(f"{engine.arch}.pooling_type", ""))
    said = POOLING_NAMES.get(int(value)) if value.isdigit() else None
    if said not in ("none", "rank") or engine.pooling == said:
        return []
    what = "no pooling (a chat or base model?)" if said == "none" else \
        "rank pooling (a reranker, not an embedding model)"
    return [f"the GGUF's {engine.arch}.pooling_type says {said!r}: {what}; it is embedded with "
            f"{engine.pooling!r} pooling instead, so its vectors may mean little"]


def self_vectors(engine: Any) -> tuple[np.ndarray, np.ndarray]:
    return engine.embed(SELF_TEST_TEXTS), engine.embed([SELF_TEST_QUERY], query=True)


def reference_record(model: str, docs: np.ndarray, query: np.ndarray,
                     **extra: Any) -> dict[str, Any]:
    """A reference file's content: the self-test texts with their vectors, plus either a
    ``fingerprint`` (bound to one file) or a ``source`` (the original model's vectors)."""
    return {"model": model, **extra, "texts": SELF_TEST_TEXTS, "query": SELF_TEST_QUERY,
            "vectors": np.asarray(docs).tolist(), "query_vector": np.asarray(query).tolist()}


def write_reference(engine: Any, path: Path, fingerprint: str) -> None:
    docs, query = self_vectors(engine)
    path.write_text(json.dumps(reference_record(engine.spec.name, docs, query[0],
                                                fingerprint=fingerprint)))


def packaged_reference(name: str) -> Path | None:
    """The shipped reference-implementation vectors of catalog model ``name``, if any."""
    path = REFERENCES / f"{name}.json"
    return path if path.is_file() else None


def min_cosine_for(engine: Any) -> float:
    """What a GGUF of this quantization must reach against the original model's vectors."""
    try:
        file_type = int(engine.metadata.get("general.file_type", 0))
    except ValueError:
        file_type = -1
    if file_type in (0, 1, 32):
        return MIN_COSINE
    return _QUANT_MIN_COSINE.get(file_type, 0.95)


def _reference_error(engine: Any, data: dict[str, Any], fingerprint: str) -> str | None:
    if "fingerprint" in data:
        if data["fingerprint"] != fingerprint:
            return "the reference was made for another model file"
    elif data.get("model") != engine.spec.name:
        return f"the reference is for model {data.get('model')!r}, not {engine.spec.name!r}"
    if len(data["query_vector"]) != engine.n_embd:
        return f"the reference has {len(data['query_vector'])} dimensions, the model " \
               f"{engine.n_embd}"
    return None


def self_test(engine: Any, reference: Path | None, fingerprint: str) -> dict[str, Any]:
    """Embed the fixed texts; compare with the reference if there is one for this model."""
    docs, query = self_vectors(engine)
    result: dict[str, Any] = {
        "finite": bool(np.isfinite(docs).all() and np.isfinite(query).all()),
        "normalized": bool(np.allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-4)),
        "distinct": bool(float((docs[0] * docs[1]).sum()) < 0.99),
        "reference": str(reference) if reference else None,
    }
    ok = result["finite"] and result["normalized"] and result["distinct"]
    if reference is not None:
        try:
            data = json.loads(reference.read_text(encoding="utf-8"))
            error = _reference_error(engine, data, fingerprint)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            data, error = {}, f"cannot read the reference: {type(exc).__name__}: {exc}"
        if error:
            result["reference_error"] = error
            ok = False
        else:
            bound = MIN_COSINE if "fingerprint" in data else min_cosine_for(engine)
            result["reference_kind"] = "model file" if "fingerprint" in data else \
                "original model"
            result["reference_source"] = data.get("source", "")
            result["required_cosine"] = bound
            want = np.asarray(data["vectors"], dtype=np.float32)
            want_q = np.asarray([data["query_vector"]], dtype=np.float32)
            cos = np.concatenate([(docs * want).sum(axis=1), (query * want_q).sum(axis=1)])
            result["cosines"] = [round(float(c), 6) for c in cos]
            result["min_cosine"] = round(float(cos.min()), 6)
            ok = ok and bool(cos.min() >= bound)
    result["ok"] = bool(ok)
    return result


def rerank_self_test(reranker: Any) -> dict[str, Any]:
    """Score the fixed query against the fixed texts: finite, not all equal, and (Qwen3: a
    probability) in range.  No reference scores are shipped for rerankers yet."""
    scores = reranker.score(SELF_TEST_QUERY, SELF_TEST_TEXTS).scores
    result: dict[str, Any] = {
        "scores": [round(float(x), 6) for x in scores],
        "finite": bool(np.isfinite(scores).all()),
        "distinct": bool(np.ptp(scores) > 0),
    }
    if reranker.family == "qwen3":
        result["in_range"] = bool(((scores >= 0) & (scores <= 1)).all())
    result["ok"] = all(v for k, v in result.items() if k != "scores")
    return result
