"""The runtime-dispatch CPU build (``cpu-dispatch`` preset): its wheel leaves the AMX variant
out (llama.cpp #20824), and the engine loads and reports the CPU kernels it runs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from click.testing import CliRunner

from gguf_embed import _llama
from gguf_embed.cli import cli
from scripts.install_llama import build_variables, drop_from_wheel, dropped_libraries

KNOWN_X86_VARIANTS = {"x64", "sse42", "sandybridge", "ivybridge", "piledriver", "haswell",
                      "skylakex", "cannonlake", "cascadelake", "icelake", "cooperlake", "zen4",
                      "alderlake"}


def _fake_wheel(path: Path, files: list[str]) -> None:
    record = "".join(f"{name},sha256=x,1\n" for name in files) + "pkg.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for name in files:
            wheel.writestr(name, b"\x7fELF" if name.endswith(".so") else b"x")
        wheel.writestr("pkg.dist-info/RECORD", record)


def test_the_dispatch_preset_builds_loadable_variants_and_drops_only_amx(tmp_path: Path) -> None:
    variables = build_variables("cpu-dispatch", [])
    assert variables["GGML_BACKEND_DL"] == "ON" and variables["GGML_CPU_ALL_VARIANTS"] == "ON"
    assert variables["GGML_NATIVE"] == "OFF"
    # the variant libraries must land beside libllama, where the engine loads them from
    assert variables["CMAKE_INSTALL_BINDIR"] == "llama_cpp/lib"
    assert dropped_libraries(variables) == ("ggml-cpu-sapphirerapids",)
    assert dropped_libraries(build_variables("cpu", [])) == ()

    wheel = tmp_path / "llama_cpp_python-0.3.36-py3-none-linux_x86_64.whl"
    lib = "llama_cpp/lib/"
    keep = [f"{lib}libggml-cpu-haswell.so", f"{lib}libggml-cpu-zen4.so", f"{lib}libllama.so",
            "llama_cpp/__init__.py"]
    _fake_wheel(wheel, [*keep, f"{lib}libggml-cpu-sapphirerapids.so"])
    dropped = drop_from_wheel(wheel, dropped_libraries(variables))
    assert dropped == [f"{lib}libggml-cpu-sapphirerapids.so"]
    with zipfile.ZipFile(wheel) as z:
        assert sorted(z.namelist()) == sorted([*keep, "pkg.dist-info/RECORD"])
        record = z.read("pkg.dist-info/RECORD").decode()
    assert "sapphirerapids" not in record
    assert all(f"{name},sha256=x,1" in record for name in keep)


def test_the_cpu_backend_is_reported_from_the_registry_and_has_no_amx() -> None:
    cpu = _llama.cpu_backend()
    library = Path(cpu["library"])
    assert library.is_file() and library.parent.resolve() == _llama.lib_dir().resolve()
    assert library.name.startswith("libggml-cpu")
    if library.name.startswith("libggml-cpu-"):  # a GGML_CPU_ALL_VARIANTS build
        assert cpu["variant"] in KNOWN_X86_VARIANTS
    else:
        assert cpu["variant"] == "built-in"
    # the features are those the loaded library was compiled for, and libllama lists the same:
    # both read one registry (a second copy of libggml, opened by path, had an empty one)
    assert cpu["features"] and all(f.split("=")[0] in _llama.system_info()
                                   for f in cpu["features"])
    assert "AMX_INT8" not in cpu["features"]  # the kernels that segfault (llama.cpp #20824)


def test_backends_load_once_in_a_fresh_process() -> None:
    """A GGML_BACKEND_DL build registers nothing until the engine loads the backends from
    llama-cpp-python's lib folder; a built-in build has its CPU backend from the start."""
    script = ("import json; from gguf_embed import _llama; lib = _llama._ggml(); "
              "before = lib.ggml_backend_reg_count(); _llama.backend(); _llama.backend(); "
              "print(json.dumps([before, lib.ggml_backend_reg_count(), "
              "_llama.cpu_backend()['variant']]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the library never prints
    before, after, variant = json.loads(proc.stdout)
    assert after >= 1
    assert before == (0 if variant != "built-in" else after)


def test_doctor_json_names_the_cpu_backend(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    result = CliRunner().invoke(cli, ["doctor", "-m", str(bad), "--json"])
    env = json.loads(result.stdout)["environment"]
    assert env["cpu_backend"] == _llama.cpu_backend()["variant"]
    assert Path(env["cpu_backend_library"]).is_file()


# ------------------------------------------------------------ the AMX rule, at run time
ZEN5_FLAGS = frozenset(["avx2", "avx512f", "avx512_vnni", "avx512_bf16"])
AMX_FLAGS = ZEN5_FLAGS | {"amx_tile", "amx_int8", "amx_bf16"}
ZEN4_FEATURES = ["SSE3", "AVX", "AVX2", "F16C", "FMA", "AVX512", "AVX512_VNNI", "AVX512_BF16"]
SAPPHIRE_FEATURES = [*ZEN4_FEATURES, "AMX_INT8"]


def test_extra_buffer_types_are_off_only_where_amx_kernels_meet_an_amx_cpu() -> None:
    rule = _llama.extra_bufts_rule
    use, why = rule(SAPPHIRE_FEATURES, AMX_FLAGS)  # -march=native on a Xeon: would crash
    assert not use and "#20824" in why and "this CPU has AMX" in why
    use, why = rule(SAPPHIRE_FEATURES, None)  # AMX kernels, CPU unknown: the safe side
    assert not use and "cannot be read" in why
    # no AMX kernels loaded: the repacked layouts stay on, AMX CPU or not
    assert rule(ZEN4_FEATURES, AMX_FLAGS)[0] and rule(ZEN4_FEATURES, None)[0]
    # AMX kernels on a CPU without AMX: ggml never offers the AMX buffer
    use, why = rule(SAPPHIRE_FEATURES, ZEN5_FLAGS)
    assert use and "no AMX" in why
    assert rule(["AVX2", "REPACK=1"], AMX_FLAGS)[0]


def test_cpu_flags_come_from_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_int8\n")
    assert _llama.cpu_flags(info) == {"fpu", "avx2", "amx_int8"}
    assert _llama.cpu_flags(tmp_path / "missing") is None


def test_the_engine_loads_models_with_the_rule(monkeypatch, models_dir: Path) -> None:
    from gguf_embed import Engine
    from gguf_embed._llama_binding import lc  # the binding the engine calls

    seen: list[bool] = []
    expected = _llama.use_extra_bufts()[0]  # this process's CPU and backend
    load = lc.llama_model_load_from_file

    def spy(path: bytes, params: object) -> object:
        seen.append(bool(params.use_extra_bufts))  # type: ignore[attr-defined]
        return load(path, params)

    monkeypatch.setattr(lc, "llama_model_load_from_file", spy)
    model = models_dir / "tiny-qwen3-q4_k_m.gguf"
    with Engine(model) as engine:
        normal = engine.embed(["a quantized model, weights repacked where ggml can"])
    monkeypatch.setattr(_llama, "use_extra_bufts", lambda: (False, "off: a test"))
    with Engine(model) as engine:
        plain = engine.embed(["a quantized model, weights repacked where ggml can"])
    assert seen == [expected, False]
    assert float((normal * plain).sum()) > 0.999  # the same vectors without extra buffers


def test_doctor_json_says_whether_extra_buffer_types_are_used(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    result = CliRunner().invoke(cli, ["doctor", "-m", str(bad), "--json"])
    env = json.loads(result.stdout)["environment"]
    use, why = _llama.use_extra_bufts()
    assert env["extra_buffer_types"] == why and why.startswith("on" if use else "off")
    assert env["cpu_backend_features"].split() == _llama.cpu_backend()["features"]
    flags = _llama.cpu_flags()
    assert flags is None or set(env["cpu_flags"].split()) <= flags
