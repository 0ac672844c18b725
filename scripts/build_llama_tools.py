#!/usr/bin/env python3
"""Build llama.cpp's own tools (llama-bench, llama-embedding) from the same source and preset
as the llama-cpp-python wheel, so benchmarks can compare gguf-embed with llama.cpp itself.

    python -m scripts.build_llama_tools                       # CPU, the `cpu` preset
    python -m scripts.build_llama_tools --preset cuda -D CMAKE_CUDA_ARCHITECTURES=90

Prints the folder holding the binaries. Built once per (version, preset, defines), cached
under ~/.cache/gguf-embed-dev/tools (or $GGUF_EMBED_DEV_CACHE).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from scripts.install_llama import build_variables
from scripts.llama_sdist import CACHE, LLAMA_CPP_PYTHON_VERSION, llama_cpp_dir

TARGETS = ("llama-bench", "llama-embedding")


def build_tools(preset: str, defines: list[str], version: str = LLAMA_CPP_PYTHON_VERSION,
                ) -> Path:
    variables = build_variables(preset, defines)
    # static tools, except that dynamically loaded backends (the cpu-dispatch preset) need
    # shared libraries; ggml then loads them from beside the tool in bin/
    dl = variables.get("GGML_BACKEND_DL", "OFF").upper() == "ON"
    variables.update(LLAMA_BUILD_TOOLS="ON", LLAMA_BUILD_EXAMPLES="ON", LLAMA_CURL="OFF",
                     LLAMA_OPENSSL="OFF", LLAMA_BUILD_APP="OFF",
                     BUILD_SHARED_LIBS="ON" if dl else "OFF")
    args = [f"-D{k}={v}" for k, v in sorted(variables.items())]
    key = hashlib.sha256(f"{version} {' '.join(args)}".encode()).hexdigest()[:12]
    build = CACHE / "tools" / f"{preset}-{key}"
    bin_dir = build / "bin"
    if all((bin_dir / t).exists() for t in TARGETS):
        return bin_dir
    jobs = str(os.cpu_count() or 2)
    print(f"building {', '.join(TARGETS)} with preset {preset}", file=sys.stderr)
    subprocess.run(["cmake", "-S", str(llama_cpp_dir(version)), "-B", str(build), *args],
                   check=True, stdout=sys.stderr)
    subprocess.run(["cmake", "--build", str(build), "-j", jobs, "--target", *TARGETS],
                   check=True, stdout=sys.stderr)
    return bin_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("-D", dest="defines", action="append", default=[], metavar="VAR=VALUE")
    opts = parser.parse_args()
    print(build_tools(opts.preset, opts.defines))


if __name__ == "__main__":
    main()
