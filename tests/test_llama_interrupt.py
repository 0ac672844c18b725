"""A Ctrl-C while llama.cpp is calling our log callback (a ctypes callback) is not lost.

Python runs SIGINT's handler at the next bytecode; during a model load that is the log
callback, and ctypes prints an exception raised there and carries on: the load went on and
the command exited 0 with full results.  No timing here: the first log line itself raises the
signal (``signal.raise_signal``: the handler runs before it returns), where a real Ctrl-C
arriving in llama.cpp would have it run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gguf_embed import Engine, Reranker, _llama, reranker
from gguf_embed._llama_binding import lc
from gguf_embed.cli import cli


class _LogThat:
    """Stands in for the ``gguf_embed.llama`` logger: on the first llama.cpp line that
    ``when`` accepts, runs ``action`` (a Ctrl-C, or an exception)."""

    def __init__(self, action: Callable[[], None], when: Callable[[str], bool]) -> None:
        self.action, self.when = action, when
        self.fired: list[str] = []

    def isEnabledFor(self, level: int) -> bool:  # logging.Logger's name
        return True

    def log(self, level: int, fmt: str, line: str) -> None:
        if not self.fired and self.when(line):
            self.fired.append(line)
            self.action()


def ctrl_c() -> None:
    signal.raise_signal(signal.SIGINT)


@pytest.fixture
def interrupt_at(monkeypatch: pytest.MonkeyPatch) -> Callable[..., _LogThat]:
    def install(when: Callable[[str], bool] = lambda line: True,
                action: Callable[[], None] = ctrl_c) -> _LogThat:
        fake = _LogThat(action, when)
        monkeypatch.setattr(_llama, "log", fake)
        return fake

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    yield install
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


@pytest.fixture
def freed(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[Any]]]:
    """Pointers llama.cpp handed out and took back, by kind."""
    seen: dict[str, list[Any]] = {"model": [], "model_freed": [], "ctx": [], "ctx_freed": []}

    def spy(name: str, kind: str) -> None:
        real = getattr(lc, name)

        def call(*args: Any) -> Any:
            result = real(*args)
            if kind.endswith("_freed"):
                seen[kind].append(args[0])
            else:
                seen[kind].append(result)
            return result

        monkeypatch.setattr(lc, name, call)

    spy("llama_model_load_from_file", "model")
    spy("llama_model_free", "model_freed")
    spy("llama_init_from_model", "ctx")
    spy("llama_free", "ctx_freed")
    yield seen


# ---------------------------------------------------------------- library
def test_ctrl_c_in_a_model_load_stops_it(
        minilm_path: Path, interrupt_at: Callable[..., _LogThat],
        freed: dict[str, list[Any]]) -> None:
    fake = interrupt_at()
    with pytest.raises(KeyboardInterrupt):
        Engine(minilm_path)
    assert fake.fired  # the Ctrl-C came from inside the log callback
    assert freed["model"] == [None]  # llama.cpp stopped before the tensors (progress callback)


def test_ctrl_c_after_llama_cpp_loaded_the_model_frees_it(
        minilm_path: Path, monkeypatch: pytest.MonkeyPatch,
        freed: dict[str, list[Any]]) -> None:
    def ctrl_c_here(model: Any) -> None:
        raise KeyboardInterrupt  # as SIGINT's default handler would, at any bytecode

    monkeypatch.setattr(_llama, "model_metadata", ctrl_c_here)
    with pytest.raises(KeyboardInterrupt) as caught:
        Engine(minilm_path)
    assert freed["model"] and freed["model"][0]
    # freed as the interrupt went by, not once the half-made Engine (which the traceback
    # holds: until exit, in the CLI) is collected
    assert caught.value.__traceback__ is not None
    assert freed["model_freed"] == freed["model"]


def test_a_handler_of_the_applications_own_gets_the_whole_load_then_the_sigint(
        minilm_path: Path, interrupt_at: Callable[..., _LogThat],
        freed: dict[str, list[Any]]) -> None:
    got: list[int] = []
    fake = interrupt_at()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        with Engine(minilm_path) as engine:  # a graceful stop: the load is not cut short
            assert fake.fired and got == [signal.SIGINT]
            assert engine.embed(["still works"]).shape == (1, engine.dims)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert freed["model"][0] and freed["model_freed"] == freed["model"]


def test_sigterm_made_a_keyboardinterrupt_is_not_lost_either(
        minilm_path: Path, interrupt_at: Callable[..., _LogThat],
        freed: dict[str, list[Any]]) -> None:
    # `gguf-embed watch` makes SIGTERM a KeyboardInterrupt; a graceful SIGTERM handler
    # (uvicorn's) returns: neither may stop the load midway with a "corrupt file" error
    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    graceful: list[int] = []
    fake = interrupt_at(action=lambda: signal.raise_signal(signal.SIGTERM))
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            Engine(minilm_path)
        assert fake.fired and freed["model"][0] and freed["model_freed"] == freed["model"]
        fake.fired.clear()
        signal.signal(signal.SIGTERM, lambda signum, frame: graceful.append(signum))
        with Engine(minilm_path):
            assert fake.fired and graceful == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_in_a_reranker_load_raises(qwen_path: Path, models_dir: Path,
                                          interrupt_at: Callable[..., _LogThat],
                                          freed: dict[str, list[Any]]) -> None:
    interrupt_at()
    with pytest.raises(KeyboardInterrupt):
        Reranker(models_dir / "tiny-qwen3-reranker-f32.gguf")
    assert freed["model"] == [None]


def test_ctrl_c_while_a_reranker_checks_its_model_frees_it(
        models_dir: Path, monkeypatch: pytest.MonkeyPatch,
        freed: dict[str, list[Any]]) -> None:
    def ctrl_c_here(path: Path) -> None:
        raise KeyboardInterrupt  # as SIGINT's default handler would, in any bytecode

    monkeypatch.setattr(reranker, "gguf_tensor_names", ctrl_c_here)
    with pytest.raises(KeyboardInterrupt) as caught:
        Reranker(models_dir / "tiny-qwen3-reranker-f32.gguf")
    assert caught.value.__traceback__ is not None  # holds the half-made reranker
    assert freed["model_freed"] == freed["model"] != []


def test_ctrl_c_in_context_creation_frees_it_and_the_engine_goes_on(
        minilm_path: Path, interrupt_at: Callable[..., _LogThat],
        freed: dict[str, list[Any]]) -> None:
    with Engine(minilm_path) as engine:
        fake = interrupt_at()
        with pytest.raises(KeyboardInterrupt):
            engine.embed(["the first embedding creates the context"])
        assert fake.fired and freed["ctx"] and freed["ctx_freed"] == freed["ctx"]
        # the next call makes a context of its own and works
        assert engine.embed(["again"]).shape == (1, engine.dims)
        assert len(freed["ctx"]) == 2
    assert freed["ctx_freed"] == freed["ctx"]


def test_ctrl_c_in_a_decode_raises_and_the_engine_goes_on(
        minilm_path: Path, interrupt_at: Callable[..., _LogThat]) -> None:
    with Engine(minilm_path) as engine:
        first = engine.embed(["a first input"])  # the context exists
        fake = interrupt_at(when=lambda line: line.startswith("decode"))
        with pytest.raises(KeyboardInterrupt):
            engine.embed(["a second input"])
        assert fake.fired, "llama.cpp no longer logs in a BERT decode: pick another line"
        assert (engine.embed(["a first input"]) == first).all()


def test_any_exception_raised_in_the_log_callback_is_raised_by_the_call(
        minilm_path: Path, interrupt_at: Callable[..., _LogThat]) -> None:
    class Stop(BaseException):
        pass

    def stop() -> None:
        raise Stop

    interrupt_at(action=stop)
    with pytest.raises(Stop):
        Engine(minilm_path)


# ---------------------------------------------------------------- the guard itself
def _log_line(text: bytes = b"a line\n") -> None:
    """llama.cpp logging a line: the C callback, called through ctypes."""
    _llama._log_callback(2, text, None)


@pytest.mark.parametrize("where", ["in the call", "in the log callback"])
def test_a_guarded_call_hands_sigint_to_its_handler_after_the_call(
        where: str, interrupt_at: Callable[..., _LogThat]) -> None:
    # "in the call": SIGINT's handler may run at any bytecode while llama.cpp runs, the
    # callback's first one too, where no try of the callback's own can catch what it raises
    interrupt_at()
    finished = []
    with pytest.raises(KeyboardInterrupt), _llama.guarded():
        ctrl_c() if where == "in the call" else _log_line()
        finished.append(True)  # the call goes on to its end, its result is kept
    assert finished == [True]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_handler_of_the_applications_own_gets_each_signal_once_after_the_call(
        signum: int) -> None:
    got: list[int] = []
    previous = signal.signal(signum, lambda signum, frame: got.append(signum))
    try:
        with _llama.guarded():
            with _llama.guarded():  # nested: the outermost hands them over
                signal.raise_signal(signum)
            signal.raise_signal(signum)
            assert got == []
        assert got == [signum, signum]
        signal.raise_signal(signum)  # its handler is back
        assert len(got) == 3
    finally:
        signal.signal(signum, previous)


def test_every_handler_is_put_back_even_if_putting_one_back_fails() -> None:
    mine = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(TypeError):  # the last one, put back first, fails
            _llama._restore(((signal.SIGINT, mine), (signal.SIGTERM, "not a handler")))
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, mine)


def test_an_ignored_sigint_stays_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _llama.guarded():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_another_thread_leaves_signals_alone_and_still_raises_callback_errors(
        interrupt_at: Callable[..., _LogThat]) -> None:
    def fail() -> None:
        raise MemoryError

    interrupt_at(action=fail)
    seen: list[Any] = []

    def work() -> None:
        try:
            with _llama.guarded():
                seen.append(signal.getsignal(signal.SIGINT))
                _log_line()
        except MemoryError as exc:
            seen.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen[0] is signal.default_int_handler and isinstance(seen[1], MemoryError)


def test_an_error_from_an_unguarded_call_is_raised_by_the_next_guarded_one(
        interrupt_at: Callable[..., _LogThat]) -> None:
    def fail() -> None:
        raise MemoryError

    interrupt_at(action=fail)
    _log_line()  # a call outside guarded(): nothing to raise it at once
    with pytest.raises(MemoryError), _llama.guarded():
        pytest.fail("the guarded call must not start")
    with _llama.guarded():  # raised once only
        pass


# ---------------------------------------------------------------- CLI
@pytest.fixture
def db(tmp_path: Path, minilm_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tar.md").write_text("# tar\n\nArchive and compress files with tar.\n")
    path = tmp_path / "i.db"
    done = CliRunner().invoke(cli, ["index", str(docs), "--db", str(path),
                                    "-m", str(minilm_path)])
    assert done.exit_code == 0, done.output
    return path


@pytest.mark.parametrize("command", ["embed", "search"])
def test_ctrl_c_while_the_cli_loads_the_model_is_exit_130(
        command: str, minilm_path: Path, db: Path,
        interrupt_at: Callable[..., _LogThat]) -> None:
    args = {"embed": ["embed", "compress files", "-m", str(minilm_path)],
            "search": ["search", "compress files", "--db", str(db), "-m", str(minilm_path)]}
    fake = interrupt_at()
    result = CliRunner().invoke(cli, args[command])
    assert fake.fired
    assert result.exit_code == 130, (result.stdout, result.stderr)
    assert result.stderr == "Interrupted.\n"
    assert result.stdout == ""
