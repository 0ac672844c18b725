#!/usr/bin/env bash
# Pack into .device/ (in .gitignore) what the GPU machine needs and cannot download:
# the llama-cpp-python source without llama.cpp's bundled vocab models and docs (the sdist is
# 76 MB, over the 64 MiB that travels) and Python 3.12 wheels its image lacks. The tldr pages
# travel with the working tree (tests/data).
# Run here, once; then carry `.device` to each run of scripts/device/run.sh there.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=.device
mkdir -p "$D/wheels"

SRC=$(python3 -m scripts.llama_sdist)
NAME=$(basename "$SRC")
tar -czf "$D/$NAME.tar.gz" -C "$(dirname "$SRC")" \
  --exclude "$NAME/vendor/llama.cpp/models" --exclude "$NAME/vendor/llama.cpp/docs" \
  --exclude "$NAME/vendor/llama.cpp/tools/ui" --exclude "$NAME/vendor/llama.cpp/benches" \
  --exclude "$NAME/.git" --exclude "$NAME/vendor/llama.cpp/.git*" "$NAME"

python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux1_x86_64 -d "$D/wheels" apsw sqlite-vec pypdf platformdirs diskcache

du -sh "$D"
