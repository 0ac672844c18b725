#!/usr/bin/env python3
"""(Re)install llama-cpp-python built with one of the presets in CMakePresets.json.

    python -m scripts.install_llama                 # the portable CPU build
    python -m scripts.install_llama --preset cuda   # NVIDIA GPU offload
    python -m scripts.install_llama --preset cuda -D CMAKE_CUDA_ARCHITECTURES=90

The wheel is built once per (version, preset, defines) and cached under
~/.cache/gguf-embed-dev/wheels (or $GGUF_EMBED_DEV_CACHE), so a second install takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from scripts.llama_sdist import CACHE, LLAMA_CPP_PYTHON_VERSION, sdist_tarball

PRESETS = Path(__file__).resolve().parent.parent / "CMakePresets.json"


def preset_variables(name: str, presets_file: Path = PRESETS) -> dict[str, str]:
    """The cache variables of preset ``name``, following ``inherits``."""
    presets = {p["name"]: p for p in json.loads(presets_file.read_text())["configurePresets"]}
    if name not in presets or presets[name].get("hidden"):
        usable = ", ".join(n for n, p in presets.items() if not p.get("hidden"))
        raise SystemExit(f"unknown preset {name!r}; choose one of: {usable}")

    def collect(preset_name: str) -> dict[str, str]:
        preset = presets[preset_name]
        parents = preset.get("inherits", [])
        merged: dict[str, str] = {}
        for parent in [parents] if isinstance(parents, str) else parents:
            merged.update(collect(parent))
        merged.update({k: str(v) for k, v in preset.get("cacheVariables", {}).items()})
        return merged

    return collect(name)


def build_variables(preset: str, defines: list[str]) -> dict[str, str]:
    """The preset's cache variables with ``VAR=VALUE`` overrides from the command line."""
    variables = preset_variables(preset)
    for item in defines:
        key, _, value = item.partition("=")
        variables[key] = value
    return variables


def cmake_args(variables: dict[str, str]) -> str:
    return " ".join(f"-D{k}={v}" for k, v in sorted(variables.items()))


def build_wheel(preset: str, defines: list[str], version: str, isolation: bool = True) -> Path:
    args = cmake_args(build_variables(preset, defines))
    key = hashlib.sha256(f"{version} {args}".encode()).hexdigest()[:12]
    folder = CACHE / "wheels" / f"{preset}-{key}"
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if wheels:
        print(f"using cached wheel {wheels[-1]}", file=sys.stderr)
        return wheels[-1]
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CMAKE_ARGS=args,
               CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    print(f"building llama-cpp-python {version} with preset {preset}: {args}", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(folder),
         *([] if isolation else ["--no-build-isolation"]), str(sdist_tarball(version))],
        check=True, env=env, stdout=sys.stderr,
    )
    (folder / "cmake-args.txt").write_text(args + "\n")
    return sorted(folder.glob("llama_cpp_python-*.whl"))[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="a configure preset (default: cpu)")
    parser.add_argument("-D", dest="defines", action="append", default=[],
                        metavar="VAR=VALUE", help="extra CMake cache variable")
    parser.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION)
    parser.add_argument("--wheel-only", action="store_true", help="build the wheel, do not install")
    parser.add_argument("--no-build-isolation", action="store_true",
                        help="build with this environment's scikit-build-core (offline machines)")
    opts = parser.parse_args()
    wheel = build_wheel(opts.preset, opts.defines, opts.version, not opts.no_build_isolation)
    if opts.wheel_only:
        print(wheel)
        return
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(wheel)], check=True)
    subprocess.run([*pip, str(wheel)], check=True)  # its own dependencies, if missing
    print(f"installed {wheel.name} ({opts.preset})", file=sys.stderr)


if __name__ == "__main__":
    main()
