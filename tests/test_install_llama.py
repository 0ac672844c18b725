"""scripts/install_llama: the preset `auto` picks from the CPU's flags, the cpu-host preset's
instruction sets (never AMX), and installing a prebuilt wheel without a compiler."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import install_llama as il

# /proc/cpuinfo flags of three kinds of x86 CPU (trimmed to what matters)
ZEN3 = frozenset(["fpu", "sse4_2", "avx", "f16c", "fma", "bmi2", "avx2"])
ZEN5 = ZEN3 | frozenset(["avx_vnni", "avx512f", "avx512cd", "avx512vl", "avx512dq",
                        "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16"])
SAPPHIRE_RAPIDS = ZEN5 | frozenset(["amx_tile", "amx_int8", "amx_bf16"])
SKYLAKE_X = ZEN3 | frozenset(["avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"])


def test_cpuinfo_flags_are_read_from_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert il.read_cpu_flags(info) == {"fpu", "avx2", "avx512f"}
    info.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # an ARM kernel
    assert il.read_cpu_flags(info) is None
    assert il.read_cpu_flags(tmp_path / "missing") is None


def test_auto_builds_for_this_cpu_where_it_can_read_its_flags() -> None:
    assert il.auto_preset("x86_64", "Linux", ZEN5) == "cpu-host"
    assert il.auto_preset("x86_64", "Linux", SAPPHIRE_RAPIDS) == "cpu-host"
    assert il.auto_preset("x86_64", "Linux", None) == "cpu"  # no /proc/cpuinfo flags
    assert il.auto_preset("x86_64", "Linux", frozenset({"sse4_2"})) == "cpu"  # no AVX2
    assert il.auto_preset("arm64", "Darwin", None) == "metal"
    assert il.auto_preset("aarch64", "Linux", None) == "cpu"


@pytest.mark.parametrize(("flags", "on"), [
    (ZEN3, {"GGML_SSE42", "GGML_AVX", "GGML_F16C", "GGML_FMA", "GGML_BMI2", "GGML_AVX2"}),
    (SKYLAKE_X, {"GGML_SSE42", "GGML_AVX", "GGML_F16C", "GGML_FMA", "GGML_BMI2", "GGML_AVX2",
                 "GGML_AVX512"}),
    (ZEN5, {"GGML_SSE42", "GGML_AVX", "GGML_F16C", "GGML_FMA", "GGML_BMI2", "GGML_AVX2",
            "GGML_AVX_VNNI", "GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI",
            "GGML_AVX512_BF16"}),
])
def test_the_host_preset_turns_on_what_the_cpu_has(flags: frozenset[str], on: set[str]) -> None:
    variables = il.build_variables("cpu-host", [], flags=flags)
    ggml_on = {k for k, v in variables.items() if k.startswith("GGML_") and v == "ON"}
    assert ggml_on == on
    assert variables["GGML_NATIVE"] == "OFF"  # explicit flags, not -march=native


def test_the_host_preset_never_compiles_amx_even_on_an_amx_cpu() -> None:
    variables = il.build_variables("cpu-host", [], flags=SAPPHIRE_RAPIDS)
    assert variables["GGML_AVX512_VNNI"] == "ON" and variables["GGML_AVX512_BF16"] == "ON"
    assert {variables[k] for k in ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")} == {"OFF"}
    assert il.dropped_libraries(variables) == ()  # one library, nothing to drop


def test_the_host_preset_skips_llama_common_through_a_file_that_exists() -> None:
    variables = il.build_variables("cpu-host", [], flags=ZEN5)
    include = Path(variables["CMAKE_PROJECT_llama.cpp_INCLUDE_BEFORE"])
    assert include.is_file() and "LLAMA_BUILD_COMMON OFF" in include.read_text()
    assert "${sourceDir}" not in il.cmake_args(variables)


def test_the_host_preset_needs_the_cpu_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(il, "read_cpu_flags", lambda *a: None)
    with pytest.raises(SystemExit, match="cpu-dispatch"):
        il.build_variables("cpu-host", [])


def test_a_prebuilt_wheel_is_installed_without_building(tmp_path: Path) -> None:
    wheel = str(tmp_path / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl")
    first, deps = il.prebuilt_commands("py", "0.3.36", wheel, None)
    assert first[:3] == ["py", "-m", "pip"] and first[-1] == wheel and "--no-deps" in first
    assert deps[-1] == wheel and "--no-deps" not in deps
    first, deps = il.prebuilt_commands("py", "0.3.36", None, "https://example.org/whl/cpu")
    assert first[first.index("--index-url") + 1] == "https://example.org/whl/cpu"
    # binary only: never falls back to compiling the sdist from that index
    assert first[first.index("--only-binary") + 1] == "llama-cpp-python"
    assert first[-1] == "llama-cpp-python==0.3.36" and deps[-1] == "llama-cpp-python==0.3.36"
