"""``lmops``: the verbs people use around the pipeline (``dvc repro`` does the building).

    lmops generate "Once upon a time" --model models/export/lm/bundle --top-p 0.9 --seed 1
    lmops generate "Once upon a time" "The cat" --model models:/lmops-classifier-lm@champion
    lmops models [NAME]                  versions, aliases and metrics in the registry
    lmops promote NAME [--version V] [--force] [--metric M]
    lmops rollback NAME
    lmops serve NAME [--alias champion] [--port 5000] [--dry-run]

The tracking/registry store is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
``<repo root>/mlflow.db``, the same rule the stages follow. A problem the user can fix prints one
line on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lmops.config import LmopsError, repo_root

if TYPE_CHECKING:  # the CLI starts without torch; generation imports it when it runs
    from lmops.models.generation import GenerationParams

DEFAULT_LM = "models/export/lm/bundle"


def _set_tracking(args: argparse.Namespace) -> str:
    import mlflow

    from lmops.tracking.runs import check_tracking_server, tracking_uri

    uri = args.tracking_uri or tracking_uri(repo_root())
    check_tracking_server(uri)  # one line now, not minutes of client retries
    mlflow.set_tracking_uri(uri)
    return uri


# --------------------------------------------------------------------------- generate


def _bundle_dir(model: str, args: argparse.Namespace, tmp: str) -> Path:
    """A local bundle folder for ``model``: a folder as is, a ``models:/`` URI downloaded."""
    from lmops.export.bundle import find_bundle

    if "://" in model or model.startswith(("models:/", "runs:/")):
        import mlflow.artifacts

        _set_tracking(args)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        local = mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=tmp)
        return find_bundle(local)
    path = Path(model)
    if not path.is_absolute() and not path.exists():
        path = repo_root() / path
    if not path.exists():
        raise LmopsError(f"--model {model}: no such folder; run `dvc repro` or pass a bundle")
    return find_bundle(path)


# the generate flags that map one to one onto GenerationParams fields
GENERATION_FLAGS = ("max_new_tokens", "temperature", "top_k", "top_p", "stop", "seed")


def generation_params(args: argparse.Namespace) -> GenerationParams:
    """The ``GenerationParams`` of the flags given; the others keep the dataclass defaults, so
    the CLI, the pyfunc and the library share one set of defaults and one set of checks."""
    from lmops.models.generation import GenerationParams

    given = {name: getattr(args, name) for name in GENERATION_FLAGS}
    return GenerationParams().replace(**{k: v for k, v in given.items() if v is not None})


def cmd_generate(args: argparse.Namespace) -> int:
    params = generation_params(args)  # bad flags fail before the model loads
    from lmops.export.bundle import generate_batch, load_bundle

    with tempfile.TemporaryDirectory(prefix="lmops-generate-") as tmp:
        bundle = load_bundle(_bundle_dir(args.model, args, tmp))
    if len(args.prompt) == 1 and not args.no_stream:
        # Stream: the prompt as the model sees it at once, then text as its tokens come.
        def show(_row: int, piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        generate_batch(bundle, args.prompt, params, on_prompt=show, on_text=show)
        sys.stdout.write("\n")
        return 0
    results = generate_batch(bundle, args.prompt, params)
    print("\n\n".join(head + tail for head, tail in results))
    return 0


# --------------------------------------------------------------------------- registry


def cmd_models(args: argparse.Namespace) -> int:
    from lmops.tracking.registry import list_models, list_versions

    _set_tracking(args)
    names = [args.name] if args.name else list_models()
    if args.json:
        print(json.dumps({n: list_versions(n) for n in names}, indent=2))
        return 0
    if not names:
        print("no registered models (run `dvc repro` to register one)")
        return 0
    for name in names:
        print(name)
        for row in list_versions(name):
            aliases = ",".join(row["aliases"]) or "-"
            metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(row["metrics"].items()))
            print(f"  v{row['version']:<4} {aliases:<28} {metrics}  {row['created']}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from lmops.tracking.registry import promote

    _set_tracking(args)
    result = promote(
        args.name,
        version=args.version,
        force=args.force,
        metric=args.metric,
        higher_is_better=args.higher_is_better,
    )
    print(result.describe())
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from lmops.tracking.registry import rollback

    _set_tracking(args)
    result = rollback(args.name)
    print(
        f"{result.name}: rolled back, champion is now version {result.version}"
        + (f" (was {result.previous})" if result.previous is not None else "")
    )
    return 0


# --------------------------------------------------------------------------- serve


def serve_command(name: str, alias: str, port: int, host: str) -> list[str]:
    """The ``mlflow models serve`` command line for ``models:/<name>@<alias>``.

    ``--env-manager local``: serve from this environment (the model's code ships inside it).
    """
    return [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{name}@{alias}",
        "--env-manager",
        "local",
        "-h",
        host,
        "-p",
        str(port),
    ]


def cmd_serve(args: argparse.Namespace) -> int:
    uri = _set_tracking(args)
    cmd = serve_command(args.name, args.alias, args.port, args.host)
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    # The scoring server execs uvicorn by name: this interpreter's bin folder must be on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if args.dry_run:
        from lmops.tracking.runs import redact_uri

        print(f"MLFLOW_TRACKING_URI={shlex.quote(redact_uri(uri))} {shlex.join(cmd)}")
        return 0
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().get_model_version_by_alias(args.name, args.alias)
    except MlflowException:
        raise LmopsError(
            f"no version of {args.name!r} has alias {args.alias!r}; see `lmops models {args.name}`"
        ) from None
    sys.stdout.flush()
    os.execvpe(cmd[0], cmd, env)
    return 0  # pragma: no cover - exec does not return


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmops",
        description="lmops: the verbs people use around the pipeline (dvc repro builds it).",
        epilog="\n".join(__doc__.splitlines()[2:9]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else <repo>/mlflow.db)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "generate",
        help="continue prompts with a language model (streams the text of a single prompt)",
        description="Continue prompts with a language model. One prompt streams to the terminal "
        "as it is generated; several are generated together and printed blank-line separated. "
        "Defaults are those of lmops.models.generation.GenerationParams.",
    )
    p.add_argument("prompt", nargs="+")
    p.add_argument(
        "--model",
        default=DEFAULT_LM,
        help=f"bundle folder, pyfunc folder or models:/NAME@ALIAS (default: {DEFAULT_LM})",
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 64")
    p.add_argument("--temperature", type=float, default=None, help="default 0.8; 0: greedy")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest")
    p.add_argument(
        "--top-p", type=float, default=None, help="nucleus sampling: smallest set with mass p"
    )
    p.add_argument(
        "--stop",
        action="append",
        default=None,
        metavar="TEXT",
        help="end the text before TEXT (repeatable; a newline: --stop $'\\n')",
    )
    p.add_argument("--seed", type=int, default=None, help="repeatable sampling")
    p.add_argument("--no-stream", action="store_true", help="print the text when it is complete")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("models", help="list registered models, versions, aliases and metrics")
    p.add_argument("name", nargs="?")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("promote", help="make a version champion if its metric is no worse")
    p.add_argument("name")
    p.add_argument("--version", type=int, default=None, help="default: the challenger")
    p.add_argument("--force", action="store_true", help="promote even if worse")
    p.add_argument(
        "--metric", default=None, help="default: the metric the version was registered with"
    )
    direction = p.add_mutually_exclusive_group()
    direction.add_argument(
        "--higher-is-better",
        dest="higher_is_better",
        action="store_const",
        const=True,
        default=None,
        help="for --metric: higher values win (default: as registered, else by its name)",
    )
    direction.add_argument(
        "--lower-is-better", dest="higher_is_better", action="store_const", const=False
    )
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", help="swap champion and previous-champion")
    p.add_argument("name")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("serve", help="serve models:/NAME@ALIAS over HTTP with mlflow models serve")
    p.add_argument("name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lmops`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LmopsError as exc:
        print(
            f"lmops: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:
        # MLflow store errors (unreachable server, bad URI) are the user's to fix too.
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException):
            first = (exc.message or str(exc)).strip().splitlines()[0]
            print(f"lmops: error: {first}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
