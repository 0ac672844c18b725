#!/usr/bin/env python3
"""(Re)install llama-cpp-python built with one of the presets in CMakePresets.json.

    python -m scripts.install_llama                 # CPU kernels picked at run time (cpu-dispatch)
    python -m scripts.install_llama --preset cpu    # AVX2 only: a much shorter build
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
import zipfile
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


# GGML_CPU_ALL_VARIANTS builds one ggml-cpu library per x86 generation and always includes
# `sapphirerapids`, the only one with AMX kernels (no CMake option leaves it out). On AVX-512 +
# AMX CPUs it would score highest and be loaded, and its AMX matmul segfaults on quantized
# models (llama.cpp #20824, in ggml_backend_amx_mul_mat). So it is taken out of the wheel: the
# loader then picks the best remaining variant (zen4/icelake/... on those CPUs: AVX-512, no AMX).
AMX_VARIANTS = ("ggml-cpu-sapphirerapids",)


def dropped_libraries(variables: dict[str, str]) -> tuple[str, ...]:
    """Backend libraries that must not ship in a wheel built with these cache variables."""
    on = variables.get("GGML_CPU_ALL_VARIANTS", "OFF").upper() in ("ON", "1", "TRUE", "YES")
    return AMX_VARIANTS if on else ()


def drop_from_wheel(wheel: Path, names: tuple[str, ...]) -> list[str]:
    """Rewrite ``wheel`` without the files whose name contains one of ``names`` (and without
    their RECORD lines, so pip installs it cleanly). Returns the dropped paths."""
    def unwanted(path: str) -> bool:
        return any(name in path.rsplit("/", 1)[-1] for name in names)

    tmp = wheel.with_suffix(".tmp")
    dropped: list[str] = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            if unwanted(item.filename):
                dropped.append(item.filename)
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(ln for ln in lines if not unwanted(ln.split(",", 1)[0])).encode()
            dst.writestr(item, data)
    tmp.replace(wheel)
    return dropped


def build_wheel(preset: str, defines: list[str], version: str, isolation: bool = True) -> Path:
    variables = build_variables(preset, defines)
    args = cmake_args(variables)
    drop = dropped_libraries(variables)
    # the key covers the preset's resolved variables (so editing a preset rebuilds) and what
    # is dropped from the wheel afterwards
    key = hashlib.sha256(
        f"{version} {args}{' drop=' + ','.join(drop) if drop else ''}".encode()).hexdigest()[:12]
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
    wheel = sorted(folder.glob("llama_cpp_python-*.whl"))[-1]
    if drop:
        for path in drop_from_wheel(wheel, drop):
            print(f"dropped {path} from the wheel (AMX: llama.cpp #20824)", file=sys.stderr)
    (folder / "cmake-args.txt").write_text(args + "\n")
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-dispatch",
                        help="a configure preset (default: cpu-dispatch)")
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
