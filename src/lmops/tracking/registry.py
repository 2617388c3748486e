"""The model registry: register a challenger, promote it to champion on its metric, roll back.

Aliases carry the state: ``challenger`` (the latest registered), ``champion`` (what serving
loads as ``models:/<name>@champion``) and ``previous-champion`` (what rollback restores). Each
version carries its evaluation metrics and the promotion rule as tags, so ``promote`` needs no
params file and compares like with like. A version is identified by the hash of its export, so
re-running the register stage on an unchanged model adds no version.

Promotions and rollbacks of one model take turns (:func:`registry_lock`): MLflow sets an alias
unconditionally (no compare-and-set), so two promotions at once would otherwise both read the same
champion, both record it as previous, and the second would be judged against a champion that had
already been replaced.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import socket
import time
from collections.abc import Iterator
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
    "registry_lock",
    "rollback",
]

log = logging.getLogger(__name__)

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous-champion"

TAG_HASH = "lmops.export_hash"
TAG_METRIC_PREFIX = "lmops.metric."
TAG_PROMOTE_METRIC = "lmops.promote_metric"
TAG_HIGHER = "lmops.higher_is_better"

# The promotion lock of model X is a registered model named X + LOCK_SUFFIX, tagged TAG_LOCK=X.
LOCK_SUFFIX = ".lmops-lock"
TAG_LOCK = "lmops.lock_for"
TAG_LOCK_OWNER = "lmops.lock_owner"
LOCK_WAIT_S = 60.0  # a promotion takes well under a second: waiting longer means trouble
LOCK_STALE_S = 300.0  # a lock this old was left by a killed process: it is broken


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


@contextlib.contextmanager
def registry_lock(
    name: str,
    client: MlflowClient | None = None,
    wait_s: float = LOCK_WAIT_S,
    stale_s: float = LOCK_STALE_S,
) -> Iterator[None]:
    """Hold the promotion lock of model ``name`` for the body; waits up to ``wait_s`` for it.

    The lock is a registered model named ``<name>.lmops-lock``, created on entry and deleted on
    exit. Creating a registered model is atomic in every MLflow store (the name is the table's
    primary key; a second create fails with ``RESOURCE_ALREADY_EXISTS``) and goes through the
    tracking server when there is one, so the lock holds across processes and machines. A file
    lock would hold only on one machine, and a tag cannot be set conditionally. A lock older than
    ``stale_s`` by the store's clock (its holder was killed) is broken with a warning. While held,
    the lock shows in the registry (hidden by :func:`list_models`).
    """
    client = client or _client()
    lock = name + LOCK_SUFFIX
    owner = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(
                lock,
                tags={TAG_LOCK: name, TAG_LOCK_OWNER: owner},
                description=f"lmops: a promote or rollback of {name!r} is in progress",
            )
            break
        except MlflowException as exc:
            # RESOURCE_DOES_NOT_EXIST: the holder deleted it while the store looked it up
            if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        held = _lock_holder(client, lock)
        if held is not None and held[1] > stale_s:
            log.warning("breaking the lock %s held by %s for %.0f s", lock, held[0], held[1])
            with contextlib.suppress(MlflowException):
                client.delete_registered_model(lock)
            continue
        if time.monotonic() > deadline:
            who = f" by {held[0]}" if held else ""
            raise LmopsError(
                f"another promote or rollback of {name!r} holds the registry lock {lock!r}{who}; "
                f"try again, or delete that registered model if its process is gone"
            )
        time.sleep(0.1 + random.random() * 0.2)  # jitter: waiters do not retry in lockstep
    try:
        yield
    finally:
        with contextlib.suppress(MlflowException):
            client.delete_registered_model(lock)


def _lock_holder(client: MlflowClient, lock: str) -> tuple[str, float] | None:
    """``(owner, age in seconds)`` of the lock model, or ``None`` when there is none now."""
    try:
        model = client.get_registered_model(lock)
    except MlflowException:
        return None
    age = time.time() - (model.creation_timestamp or 0) / 1000
    return model.tags.get(TAG_LOCK_OWNER, "?"), age


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
    ``previous-champion`` for :func:`rollback`. Concurrent promotions and rollbacks of ``name``
    run one after the other (:func:`registry_lock`), each against the champion the last left.
    """
    _check_name(name)
    client = _client()
    _aliases(client, name)  # an unknown name fails here, before any lock is created
    with registry_lock(name, client):
        return _promote(client, name, version, force, metric, higher_is_better)


def _promote(
    client: MlflowClient,
    name: str,
    version: int | None,
    force: bool,
    metric: str | None,
    higher_is_better: bool | None,
) -> PromoteResult:
    """:func:`promote`'s work, under the registry lock: read the aliases, compare, move them."""
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
    undone the same way. Takes the registry lock, like :func:`promote`.
    """
    _check_name(name)
    client = _client()
    _aliases(client, name)  # an unknown name fails here, before any lock is created
    with registry_lock(name, client):
        return _rollback(client, name)


def _rollback(client: MlflowClient, name: str) -> PromoteResult:
    """:func:`rollback`'s work, under the registry lock."""
    aliases = _aliases(client, name)
    previous = aliases.get(PREVIOUS)
    current = aliases.get(CHAMPION)
    if previous is None:
        if current is None:
            raise LmopsError(
                f"model {name!r} has no {PREVIOUS!r} to roll back to: it has no champion yet; "
                f"promote a version first (`lmops promote {name}`)"
            )
        raise LmopsError(
            f"model {name!r} has no {PREVIOUS!r} to roll back to: version {current} is its "
            "first champion; promote another version to replace it"
        )
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
    """Names of all registered models, sorted; promotion locks held right now left out."""
    models = _client().search_registered_models()
    return sorted(m.name for m in models if TAG_LOCK not in (m.tags or {}))


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
