"""``gguf-embed doctor``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..doctor import (
    environment,
    model_report,
    packaged_reference,
    rerank_self_test,
    self_test,
    write_reference,
)
from ..errors import GgufEmbedError, ModelLoadError
from ..models import DEFAULT_MODEL, ResolvedModel, file_fingerprint
from ._base import _threads, cli, model_options, resolve, terminal_text


@cli.command()
@model_options
@click.option("--reference", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reference vectors for the self-test [default: MODEL.gguf.reference.json "
                   "beside the model file, else the shipped vectors of the original model].")
@click.option("--write-reference", "write_reference_", is_flag=True,
              help="Record this run's vectors as the reference (on a build you trust).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(model: str | None, offline: bool, hf_endpoint: str | None, cache_dir: str | None,
           reference: Path | None, write_reference_: bool, as_json: bool) -> None:
    """Check the llama.cpp build, SQLite extensions and the model; self-test its vectors.

    Exits with 1 when the self-test fails (vectors differ from the reference, are not finite,
    or do not tell texts apart).
    """
    env = environment()
    try:
        resolved = resolve(model or DEFAULT_MODEL, offline=offline, hf_endpoint=hf_endpoint,
                           cache_dir=cache_dir)
        from ..engine import Engine
        from ..reranker import looks_like_reranker

        if resolved.spec.kind == "reranker" or looks_like_reranker(resolved.path):
            _doctor_reranker(resolved, env, as_json)
            return
        engine = Engine(resolved, **_threads({}))
    except GgufEmbedError as exc:  # still report the environment: it is half the diagnosis
        error = terminal_text(str(exc))
        if as_json:
            click.echo(json.dumps({"environment": env, "model": {"error": str(exc)},
                                   "self_test": None}, indent=2, default=str))
        else:
            _print_environment(env)
            click.echo(f"{'model:':<24} cannot load: {error}")
        raise click.ClickException(error) from exc
    fingerprint = file_fingerprint(Path(engine.path))
    beside = Path(str(engine.path) + ".reference.json")
    if write_reference_:
        write_reference(engine, reference or beside, fingerprint)
        click.echo(f"wrote {reference or beside}", err=True)
    if reference is None:
        reference = beside if beside.exists() else packaged_reference(engine.spec.name)
    test = self_test(engine, reference if reference and reference.exists() else None,
                     fingerprint)
    report = {"environment": env, "model": model_report(engine), "self_test": test}
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_environment(env)
        info = report["model"]
        for key in ("path", "name", "architecture", "dims", "pooling", "context",
                    "gpu_layers", "threads", "parameters", "size"):
            click.echo(terminal_text(f"{'model ' + key + ':':<24} {info[key]}"))
        for warning in info["warnings"]:
            click.echo(terminal_text(f"{'model warning:':<24} {warning}"))
        state = "ok" if test["ok"] else "FAILED"
        detail = (f"min cosine {test['min_cosine']}, needs {test['required_cosine']}, against "
                  f"the {test['reference_kind']}'s vectors in {test['reference']}"
                  if "min_cosine" in test else test.get("reference_error")
                  or "no reference vectors for this model (checked finite, normalized, distinct)")
        click.echo(f"{'self-test:':<24} {state} ({detail})")
    if not test["ok"]:
        sys.exit(1)


def _print_environment(env: dict[str, object]) -> None:
    for key, value in env.items():
        click.echo(terminal_text(f"{key + ':':<24} {value}"))


def _doctor_reranker(resolved: ResolvedModel, env: dict, as_json: bool) -> None:
    """A reranker: refuse one without the head it needs, else score fixed pairs."""
    from ..reranker import Reranker

    try:
        reranker = Reranker(resolved, **_threads({}))
    except ModelLoadError as exc:
        info, test = {"path": str(resolved.path)}, {"ok": False, "error": str(exc)}
    else:
        info, test = reranker.info(), rerank_self_test(reranker)
        reranker.close()
    if as_json:
        click.echo(json.dumps({"environment": env, "reranker": info, "self_test": test},
                              indent=2, default=str))
    else:
        _print_environment(env)
        for key, value in info.items():
            click.echo(terminal_text(f"{'reranker ' + key + ':':<24} {value}"))
        detail = test.get("error") or f"scores {test['scores']}"
        click.echo(terminal_text(
            f"{'self-test:':<24} {'ok' if test['ok'] else 'FAILED'} ({detail})"))
    if not test["ok"]:
        sys.exit(1)
