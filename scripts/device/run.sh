#!/usr/bin/env bash
# On the GPU machine (the `device` tool), from the repository root, with `.device` carried
# (scripts/device/prepare.sh made it). Each stage fits one 10-minute command; the machine
# keeps its files only while it stays warm, so run the stages back to back:
#
#   bash scripts/device/run.sh build            # llama-cpp-python + llama.cpp tools, CUDA
#   bash scripts/device/run.sh models 0.6b      # random-weight shape GGUFs: F16, Q8_0, Q4_K_M
#   bash scripts/device/run.sh bench 0.6b       # the size table, our engine vs llama.cpp
#   bash scripts/device/run.sh models 4b; bash scripts/device/run.sh bench 4b
#   bash scripts/device/run.sh ray 0.6b         # index --ray, one GPU actor, against a local run
#
# The ray stage needs Ray there: its wheel (~80 MB) is over one call's 64 MiB, so carry it in
# two calls as halves (`split -n 2`) and `cat` them together on the warm machine first.
# PRESET=cpu runs the same stages on a CPU-only machine (how this script is checked).
set -euo pipefail
cd "$(dirname "$0")/../.."
PRESET=${PRESET:-cuda}
DEFINES=()
[ "$PRESET" = cuda ] && DEFINES=(-D CMAKE_CUDA_ARCHITECTURES=90)
export PYTHONUNBUFFERED=1 GGUF_EMBED_DEV_CACHE=${GGUF_EMBED_DEV_CACHE:-/tmp/gguf-embed-dev}
OUT=${OUT:-/tmp/gguf-embed-out}
mkdir -p "$OUT" "$GGUF_EMBED_DEV_CACHE/sdist"
if [ -d .device/wheels ] && ! python3 -c 'import apsw, sqlite_vec, pypdf, diskcache' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device/wheels/*.whl
  export PYTHONPATH=/tmp/site
fi
cp -n .device/llama_cpp_python-*.tar.gz "$GGUF_EMBED_DEV_CACHE/sdist/" 2>/dev/null || true
CORPUS=${CORPUS:-tests/data}  # the tldr pages, committed
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

case "${1:?stage: build, models SHAPE or bench SHAPE}" in
  build)
    WHEEL=$(python3 -m scripts.install_llama --preset "$PRESET" "${DEFINES[@]}" \
      --no-build-isolation --wheel-only 2>"$OUT/build.log")
    python3 -m pip install -q --no-deps --force-reinstall "$WHEEL"
    python3 -m scripts.build_llama_tools --preset "$PRESET" "${DEFINES[@]}" 2>>"$OUT/build.log"
    python3 -c 'import gguf_embed._llama as l; print(l.devices(), l.supports_gpu_offload())'
    ;;
  models)
    python3 -m scripts.build_shape_models --shape "${2:?shape}" --corpus "$CORPUS"
    ;;
  bench)
    BIN=$(python3 -m scripts.build_llama_tools --preset "$PRESET" "${DEFINES[@]}")
    for quant in q4_k_m f16; do
      python3 -m scripts.bench_sizes --gguf "models/shape-qwen3-${2:?shape}-$quant.gguf" \
        --corpus "$CORPUS" --impls engine llama.cpp --llama-bin "$BIN" \
        --sizes ${SIZES:-short medium long} | tee -a "$OUT/sizes-$2.md"
    done
    ;;
  ray)
    MODEL=${MODEL:-models/shape-qwen3-${2:?shape}-q4_k_m.gguf}
    rm -f "$OUT/ray.db" "$OUT/local.db"
    /usr/bin/time -f "local: %e s" python3 -m gguf_embed index "$CORPUS/tldr-linux" \
      --db "$OUT/local.db" -m "$MODEL" --json | tee "$OUT/ray-local.json"
    /usr/bin/time -f "--ray: %e s" python3 -m gguf_embed index "$CORPUS/tldr-linux" \
      --db "$OUT/ray.db" -m "$MODEL" --ray --json | tee "$OUT/ray.json"
    python3 -m scripts.compare_indexes "$OUT/local.db" "$OUT/ray.db"
    ;;
  *) echo "unknown stage $1" >&2; exit 2 ;;
esac
