#!/usr/bin/env python3
"""(Re)install llama-cpp-python built with one of the presets in CMakePresets.json.

    python -m scripts.install_llama                 # for this CPU (--preset auto: cpu-host)
    python -m scripts.install_llama --preset cpu-dispatch   # every x86 generation (portable)
    python -m scripts.install_llama --preset cpu    # AVX2 only
    python -m scripts.install_llama --preset cuda -D CMAKE_CUDA_ARCHITECTURES=90
    python -m scripts.install_llama --wheel FILE_OR_URL       # a prebuilt wheel: no compiler
    python -m scripts.install_llama --index-url URL           # from a wheel index: no compiler

The wheel is built once per (version, preset, defines) and cached under
~/.cache/gguf-embed-dev/wheels (or $GGUF_EMBED_DEV_CACHE), so a second install takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from scripts.llama_sdist import CACHE, LLAMA_CPP_PYTHON_VERSION, sdist_tarball

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "CMakePresets.json"

# cpu-host: GGML option -> the /proc/cpuinfo flags it needs (all of them). AMX is never turned
# on: its matmul segfaults on quantized models (llama.cpp #20824); the engine also turns extra
# buffer types off at run time if an installed build has AMX kernels on an AMX CPU.
HOST_OPTIONS: dict[str, tuple[str, ...]] = {
    "GGML_SSE42": ("sse4_2",),
    "GGML_AVX": ("avx",),
    "GGML_F16C": ("f16c",),
    "GGML_FMA": ("fma",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX2": ("avx2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX512": ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"),
    "GGML_AVX512_VBMI": ("avx512f", "avx512vbmi"),
    "GGML_AVX512_VNNI": ("avx512f", "avx512_vnni"),
    "GGML_AVX512_BF16": ("avx512f", "avx512_bf16"),
}


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


def read_cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The instruction-set flags of the first CPU in ``cpuinfo``; None where there is no such
    file (macOS, Windows) or no flags line (non-x86 kernels call it ``Features``)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return frozenset(value.split())
    return None


def auto_preset(machine: str | None = None, system: str | None = None,
                flags: frozenset[str] | None = None) -> str:
    """The preset ``--preset auto`` builds: Metal on Apple silicon, ``cpu-host`` (this CPU's
    instruction sets, one library) on an x86-64 Linux whose flags can be read, else ``cpu``."""
    machine = (machine or platform.machine()).lower()
    system = system or platform.system()
    if system == "Darwin" and machine in ("arm64", "aarch64"):
        return "metal"
    if machine in ("x86_64", "amd64") and flags is not None and "avx2" in flags:
        return "cpu-host"
    return "cpu"


def host_variables(flags: frozenset[str]) -> dict[str, str]:
    """The cpu-host preset's instruction-set options for a CPU with ``flags``: each GGML option
    on when the CPU has all its flags; AMX always off."""
    variables = {name: "ON" if all(f in flags for f in needs) else "OFF"
                 for name, needs in HOST_OPTIONS.items()}
    variables.update(GGML_NATIVE="OFF", GGML_AMX_TILE="OFF", GGML_AMX_INT8="OFF",
                     GGML_AMX_BF16="OFF")
    return variables


def build_variables(preset: str, defines: list[str],
                    flags: frozenset[str] | None = None) -> dict[str, str]:
    """The preset's cache variables with ``VAR=VALUE`` overrides from the command line;
    ``cpu-host`` gets this CPU's instruction sets (``flags``, default: /proc/cpuinfo)."""
    variables = {k: v.replace("${sourceDir}", str(ROOT)) for k, v in preset_variables(
        preset).items()}
    if preset == "cpu-host":
        flags = flags if flags is not None else read_cpu_flags()
        if flags is None:
            raise SystemExit("--preset cpu-host reads the CPU's flags from /proc/cpuinfo, which "
                             "this system has not; use --preset cpu or cpu-dispatch")
        variables.update(host_variables(flags))
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
    # is dropped from the wheel afterwards, not where the checkout lives (a second clone reuses it)
    keyed = args.replace(str(ROOT), "<checkout>")
    included = "".join(Path(v).read_text() for k, v in sorted(variables.items())
                       if k.endswith("_INCLUDE_BEFORE") and Path(v).is_file())
    key = hashlib.sha256(
        f"{version} {keyed}{' drop=' + ','.join(drop) if drop else ''}{included}".encode()
    ).hexdigest()[:12]
    folder = CACHE / "wheels" / f"{preset}-{key}"
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if wheels:
        print(f"using cached wheel {wheels[-1]}", file=sys.stderr)
        return wheels[-1]
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, CMAKE_ARGS=args,
               CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    print(f"building llama-cpp-python {version} with preset {preset}: {args}", file=sys.stderr)
    started = time.monotonic()
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
    print(f"built {wheel.name} in {(time.monotonic() - started) / 60:.1f} min", file=sys.stderr)
    return wheel


def prebuilt_commands(python: str, version: str, wheel: str | None,
                      index_url: str | None) -> list[list[str]]:
    """pip commands that install a prebuilt llama-cpp-python (never compiling it), then its
    dependencies from the usual index."""
    pip = [python, "-m", "pip", "install", "--quiet"]
    if wheel:
        first = [*pip, "--force-reinstall", "--no-deps", wheel]
    else:
        first = [*pip, "--force-reinstall", "--no-deps", "--only-binary", "llama-cpp-python",
                 "--index-url", str(index_url), f"llama-cpp-python=={version}"]
    return [first, [*pip, wheel if wheel else f"llama-cpp-python=={version}"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="auto",
                        help="a configure preset; auto (the default): cpu-host on x86-64 "
                             "Linux, metal on Apple silicon, else cpu")
    parser.add_argument("-D", dest="defines", action="append", default=[],
                        metavar="VAR=VALUE", help="extra CMake cache variable")
    parser.add_argument("--version", default=LLAMA_CPP_PYTHON_VERSION)
    parser.add_argument("--wheel-only", action="store_true", help="build the wheel, do not install")
    parser.add_argument("--no-build-isolation", action="store_true",
                        help="build with this environment's scikit-build-core (offline machines)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wheel", metavar="FILE_OR_URL",
                        help="install this prebuilt llama-cpp-python wheel (no compiler)")
    source.add_argument("--index-url", metavar="URL",
                        help="install a prebuilt llama-cpp-python wheel from this index "
                             "(no compiler)")
    opts = parser.parse_args()
    if opts.wheel or opts.index_url:
        for command in prebuilt_commands(sys.executable, opts.version, opts.wheel,
                                         opts.index_url):
            subprocess.run(command, check=True)
        print("installed a prebuilt llama-cpp-python; `gguf-embed doctor` shows its CPU kernels "
              "(gguf-embed turns llama.cpp's extra buffer types off where AMX kernels meet an "
              "AMX CPU, llama.cpp #20824)", file=sys.stderr)
        return
    if opts.preset == "auto":
        opts.preset = auto_preset(flags=read_cpu_flags())
        print(f"--preset auto: {opts.preset}", file=sys.stderr)
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
