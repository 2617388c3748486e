"""The model registry: register a challenger, promote it to champion on its metric, roll back.

Aliases carry the state: ``challenger`` (the latest registered), ``champion`` (what serving
loads as ``models:/<name>@champion``) and ``previous-champion`` (what rollback restores). Each
version carries its evaluation metrics and the promotion rule as tags, so ``promote`` needs no
params file and compares like with like. A version is identified by the hash of its export, so
re-running the register stage on an unchanged model adds no version.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from lmops.config import LmopsError

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "PREVIOUS",
    "PromoteResult",
    "list_models",
    "list_versions",
    "promote",
    "register_model",
    "rollback",
]

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous-champion"

TAG_HASH = "lmops.export_hash"
TAG_METRIC_PREFIX = "lmops.metric."
TAG_PROMOTE_METRIC = "lmops.promote_metric"
TAG_HIGHER = "lmops.higher_is_better"


@dataclass(frozen=True)
class PromoteResult:
    """What promote or rollback did; ``changed`` is False when the version already was champion."""

    name: str
    version: int
    previous: int | None
    metric: str | None
    value: float | None
    previous_value: float | None
    forced: bool
    changed: bool

    def describe(self) -> str:
        """One line for people: what is champion now and why."""
        if not self.changed:
            return f"{self.name}: version {self.version} is already champion"
        what = f"{self.name}: champion is now version {self.version}"
        if self.previous is not None:
            what += f" (was {self.previous})"
        if self.metric and self.value is not None:
            what += f"; {self.metric} {self.value:.6g}"
            if self.previous_value is not None:
                what += f" vs {self.previous_value:.6g}"
        return what + (" [forced]" if self.forced else "")


def _client() -> MlflowClient:
    return MlflowClient()


def _check_name(name: str) -> None:
    if not name or "'" in name or "`" in name:
        raise LmopsError(f"model name {name!r} must be non-empty, without quotes or backticks")


def _aliases(client: MlflowClient, name: str) -> dict[str, int]:
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise LmopsError(
                f"no registered model named {name!r}; run the register stage, "
                "or see `lmops models` for the names there are"
            ) from None
        raise
    return {alias: int(version) for alias, version in (model.aliases or {}).items()}


def _version(client: MlflowClient, name: str, version: int) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise LmopsError(
                f"model {name!r} has no version {version}; see `lmops models {name}`"
            ) from None
        raise


def _metric(mv: ModelVersion, metric: str) -> float | None:
    raw = mv.tags.get(TAG_METRIC_PREFIX + metric)
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def _metric_tags(metrics: dict[str, float], promote_metric: str, higher: bool) -> dict[str, str]:
    tags = {TAG_METRIC_PREFIX + k: repr(float(v)) for k, v in metrics.items()}
    tags[TAG_PROMOTE_METRIC] = promote_metric
    tags[TAG_HIGHER] = "true" if higher else "false"
    return tags


def register_model(
    model_uri_or_dir: str | os.PathLike[str],
    name: str,
    *,
    export_hash: str,
    metrics: dict[str, float],
    run_id: str | None,
    promote_metric: str,
    higher_is_better: bool,
) -> int:
    """Register the model as a new version of ``name`` tagged as ``challenger``; its number.

    ``model_uri_or_dir`` is a model URI (``models:/m-...`` from ``log_model``, ``runs:/...``) or
    a local pyfunc folder, which is first logged as artifacts of ``run_id`` (so the registry
    points at the run's artifact store, not at a path on this machine). When a version with the
    same ``export_hash`` exists, it is returned instead (its metric tags refreshed) and no
    version is added.
    """
    _check_name(name)
    if promote_metric not in metrics:
        raise LmopsError(
            f"promotion metric {promote_metric!r} is not among the evaluated metrics "
            f"({', '.join(sorted(metrics)) or 'none'}); check register.metric"
        )
    client = _client()
    tags = _metric_tags(metrics, promote_metric, higher_is_better)
    existing = client.search_model_versions(f"name='{name}' and tag.`{TAG_HASH}`='{export_hash}'")
    if existing:
        version = min(int(mv.version) for mv in existing)
        for key, value in tags.items():
            client.set_model_version_tag(name, str(version), key, value)
    else:
        source = str(model_uri_or_dir)
        local = Path(model_uri_or_dir)
        if "://" not in source and local.is_dir():
            if run_id is None:
                raise LmopsError(f"registering the folder {local} needs the run to log it to")
            # One folder per model and export: a run may register several models.
            safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
            artifact_path = f"registered/{safe}-{export_hash[:12]}"
            client.log_artifacts(run_id, str(local), artifact_path)
            source = f"runs:/{run_id}/{artifact_path}"
        tags[TAG_HASH] = export_hash
        mv = mlflow.register_model(source, name, tags=tags)
        version = int(mv.version)
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    return version


_LOWER_IS_BETTER_WORDS = ("loss", "ppl", "perplexity", "error", "wer", "cer", "mse", "mae")


def _direction(candidate: ModelVersion, metric: str, higher_is_better: bool | None) -> bool:
    """Whether higher ``metric`` is better: as asked, else as registered, else by its name."""
    if higher_is_better is not None:
        return higher_is_better
    if metric == candidate.tags.get(TAG_PROMOTE_METRIC) and TAG_HIGHER in candidate.tags:
        return candidate.tags[TAG_HIGHER].lower() == "true"
    return not any(word in metric.lower() for word in _LOWER_IS_BETTER_WORDS)


def promote(
    name: str,
    version: int | None = None,
    force: bool = False,
    metric: str | None = None,
    higher_is_better: bool | None = None,
) -> PromoteResult:
    """Make ``version`` (default: the challenger) champion when it is no worse than the champion.

    The comparison uses ``metric`` (default: the version's ``lmops.promote_metric`` tag); its
    direction is ``higher_is_better`` when given, else the ``lmops.higher_is_better`` tag for
    the registered metric, else guessed from the name (loss, ppl, error: lower is better).
    Ties promote. ``force`` skips the check. The old champion keeps the alias
    ``previous-champion`` for :func:`rollback`.
    """
    _check_name(name)
    client = _client()
    aliases = _aliases(client, name)
    if version is None:
        if CHALLENGER not in aliases:
            raise LmopsError(
                f"model {name!r} has no {CHALLENGER!r} version; run the register stage "
                "or pass --version"
            )
        version = aliases[CHALLENGER]
    candidate = _version(client, name, version)
    metric = metric or candidate.tags.get(TAG_PROMOTE_METRIC)
    higher = _direction(candidate, metric, higher_is_better) if metric else True
    value = _metric(candidate, metric) if metric else None
    champion_version = aliases.get(CHAMPION)

    if champion_version == version:
        if aliases.get(CHALLENGER) == version:  # re-registered unchanged export: tidy up
            client.delete_registered_model_alias(name, CHALLENGER)
        return PromoteResult(
            name, version, aliases.get(PREVIOUS), metric, value, None, force, False
        )

    previous_value = None
    if champion_version is not None:
        champion = _version(client, name, champion_version)
        previous_value = _metric(champion, metric) if metric else None
        if not force:
            if metric is None:
                raise LmopsError(
                    f"version {version} of {name!r} names no promotion metric; pass --metric or --force"
                )
            if value is None or previous_value is None:
                which = version if value is None else champion_version
                raise LmopsError(
                    f"version {which} of {name!r} has no metric {metric!r} to compare; "
                    "pass another --metric or --force"
                )
            worse = value < previous_value if higher else value > previous_value
            if worse:
                sense = "higher" if higher else "lower"
                raise LmopsError(
                    f"not promoting {name!r} version {version}: {metric} {value:.6g} is worse "
                    f"than champion version {champion_version} ({previous_value:.6g}, {sense} is "
                    "better); use --force to promote anyway"
                )
        client.set_registered_model_alias(name, PREVIOUS, str(champion_version))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if aliases.get(CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(
        name, str(version), "lmops.promoted_at", datetime.now(timezone.utc).isoformat()
    )
    return PromoteResult(
        name, version, champion_version, metric, value, previous_value, force, True
    )


def rollback(name: str) -> PromoteResult:
    """Swap ``champion`` and ``previous-champion``: the last promotion is undone.

    Rolling back twice restores the rolled-back version, so a mistaken rollback is itself
    undone the same way.
    """
    _check_name(name)
    client = _client()
    aliases = _aliases(client, name)
    previous = aliases.get(PREVIOUS)
    if previous is None:
        raise LmopsError(f"model {name!r} has no {PREVIOUS!r} to roll back to")
    current = aliases.get(CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, str(previous))
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS, str(current))
    else:
        client.delete_registered_model_alias(name, PREVIOUS)
    mv = _version(client, name, previous)
    metric = mv.tags.get(TAG_PROMOTE_METRIC)
    return PromoteResult(
        name,
        previous,
        current,
        metric,
        _metric(mv, metric) if metric else None,
        None,
        False,
        True,
    )


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(m.name for m in _client().search_registered_models())


def list_versions(name: str) -> list[dict[str, Any]]:
    """Every version of ``name``, newest first, with its aliases, metrics and export hash."""
    _check_name(name)
    client = _client()
    by_version: dict[int, list[str]] = {}
    for alias, version in _aliases(client, name).items():
        by_version.setdefault(version, []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        version = int(mv.version)
        rows.append(
            {
                "name": name,
                "version": version,
                "aliases": sorted(by_version.get(version, [])),
                "metrics": {
                    k[len(TAG_METRIC_PREFIX) :]: float(v)
                    for k, v in mv.tags.items()
                    if k.startswith(TAG_METRIC_PREFIX)
                },
                "promote_metric": mv.tags.get(TAG_PROMOTE_METRIC),
                "higher_is_better": mv.tags.get(TAG_HIGHER, "true") == "true",
                "export_hash": mv.tags.get(TAG_HASH),
                "run_id": mv.run_id,
                "source": mv.source,
                "created": datetime.fromtimestamp(
                    mv.creation_timestamp / 1000, tz=timezone.utc
                ).isoformat(timespec="seconds"),
            }
        )
    return sorted(rows, key=lambda r: r["version"], reverse=True)
