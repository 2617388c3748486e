"""What the clean stage did: documents and bytes per step, why documents went, a few examples.

Why: a data engineer trusts a filter only after seeing what it removed. Each step of the
datatrove pipeline is followed by a :class:`StepMeter` (documents and UTF-8 bytes that came
out); filters and dedup steps keep a few of the documents they drop (:class:`SampleWriter`);
datatrove's own per-task statistics give the reasons. :func:`build_report` merges them into
one JSON-able dict; :func:`render_table` prints the short table at the end of the stage,
:func:`render_html` makes the page logged to MLflow (:func:`write_report` writes both files)
and :func:`stage_metrics` picks the numbers for ``metrics.json``.
"""

from __future__ import annotations

import html
import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers import JsonlWriter

from lmops.io import atomic_write_json, atomic_write_text

__all__ = [
    "SampleWriter",
    "StepMeter",
    "build_report",
    "read_pass_stats",
    "read_samples",
    "render_html",
    "render_table",
    "stage_metrics",
    "write_report",
]

METER_PREFIX = "meter:"
EXAMPLE_CHARS = 400


class StepMeter(PipelineStep):
    """Pass-through step counting the documents and UTF-8 bytes that reach it."""

    type = "📊 - METER"

    def __init__(self, step: str) -> None:
        self.name = f"{METER_PREFIX}{step}"  # before super().__init__: the stats take the name
        super().__init__()

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        docs = size = 0
        try:
            for doc in data:
                docs += 1
                text = doc.text  # ASCII (a flag CPython keeps): one byte a character, no encoding
                size += len(text) if text.isascii() else len(text.encode("utf-8"))
                yield doc
        finally:  # one update per task: datatrove's per-call statistics cost more than counting
            self.stat_update("docs", value=docs)
            self.stat_update("bytes", value=size)


class SampleWriter(JsonlWriter):
    """A JSONL writer that keeps only the first ``limit`` documents of each task.

    Given to filters as their ``exclusion_writer``: the report wants examples, not a copy of
    everything removed.
    """

    name = "🐿 Sample"

    def __init__(self, output_folder: str, limit: int = 20) -> None:
        super().__init__(output_folder, output_filename="${rank}.jsonl", compression=None)
        self.limit = limit
        self._written: Counter[int] = Counter()

    def write(self, document: Document, rank: int = 0, **kwargs: Any) -> None:
        if self._written[rank] >= self.limit:
            return
        self._written[rank] += 1
        super().write(document, rank, **kwargs)


def read_samples(folder: Path, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` documents a :class:`SampleWriter` kept, in task order."""
    out: list[dict[str, Any]] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                out.append(json.loads(line))
                if len(out) >= limit:
                    return out
    return out


def _total(value: Any) -> float:
    if isinstance(value, dict):
        return float(value.get("total", 0))
    return float(value or 0)


def read_pass_stats(logging_dir: Path) -> list[dict[str, Any]]:
    """Per-step statistics of one datatrove pass, summed over its tasks.

    Returns ``[{"name", "seconds", "stats": {label: total}}]`` in pipeline order.
    """
    merged: list[dict[str, Any]] = []
    for path in sorted((logging_dir / "stats").glob("*.json")):
        steps = json.loads(path.read_text())
        for i, step in enumerate(steps):
            if i == len(merged):
                merged.append({"name": step["name"], "seconds": 0.0, "stats": defaultdict(float)})
            merged[i]["seconds"] += _total(step.get("time_stats", 0))
            for label, value in (step.get("stats") or {}).items():
                merged[i]["stats"][label] += _total(value)
    for step in merged:
        step["stats"] = dict(step["stats"])
    return merged


def _meters(passes: Iterable[list[dict[str, Any]]]) -> list[tuple[str, int, int]]:
    """``(step, docs, bytes)`` at every meter, in pipeline order across passes."""
    out = []
    for steps in passes:
        for step in steps:
            name = step["name"].split(": ", 1)[-1]
            if name.startswith(METER_PREFIX):
                s = step["stats"]
                out.append(
                    (name[len(METER_PREFIX) :], int(s.get("docs", 0)), int(s.get("bytes", 0)))
                )
    return out


def _reasons(passes: Iterable[list[dict[str, Any]]], step_names: dict[str, str]) -> dict[str, dict]:
    """``{report step: {reason: count}}`` from the datatrove steps' ``dropped_<reason>`` stats."""
    out: dict[str, dict[str, int]] = {}
    for steps in passes:
        for step in steps:
            label = step_names.get(step["name"].split(": ", 1)[-1])
            if label is None:
                continue
            reasons = {
                k[len("dropped_") :]: int(v)
                for k, v in step["stats"].items()
                if k.startswith("dropped_") and v
            }
            if not reasons and step["stats"].get("dropped"):
                reasons = {"duplicate": int(step["stats"]["dropped"])}
            if reasons:
                out.setdefault(label, {}).update(reasons)
    return out


def build_report(
    passes: list[list[dict[str, Any]]],
    step_names: dict[str, str],
    *,
    ingest: dict[str, Any],
) -> dict[str, Any]:
    """The stage report: totals, one row per step, top rejection reasons, what reading found.

    ``passes``: :func:`read_pass_stats` of each pass in order; ``step_names`` maps a datatrove
    step's name to the report's step name (for the reasons).
    """
    meters = _meters(passes)
    reasons = _reasons(passes, step_names)
    rows = []
    if ingest.get("documents_read"):  # the readers' own drops: empty and undecodable documents
        dropped = {
            "empty": ingest.get("empty_documents", 0),
            "invalid_utf8": ingest.get("invalid_utf8_dropped", 0),
        }
        rows.append(
            {
                "name": "read",
                "docs_in": ingest["documents_read"],
                "docs_out": ingest["documents"],
                "bytes_in": ingest["bytes_read"],
                "bytes_out": ingest["bytes"],
                "dropped": ingest["documents_read"] - ingest["documents"],
                "reasons": {k: v for k, v in dropped.items() if v},
            }
        )
        reasons.setdefault("read", rows[0]["reasons"])
    for (_, d_in, b_in), (name, d_out, b_out) in zip(meters, meters[1:], strict=False):
        rows.append(
            {
                "name": name,
                "docs_in": d_in,
                "docs_out": d_out,
                "bytes_in": b_in,
                "bytes_out": b_out,
                "dropped": d_in - d_out,
                "reasons": reasons.get(name, {}),
            }
        )
    read = meters[0] if meters else ("read", 0, 0)
    if rows:
        read = ("read", rows[0]["docs_in"], rows[0]["bytes_in"])
    last = meters[-1] if meters else read
    top = Counter({f"{s}/{r}": n for s, rs in reasons.items() for r, n in rs.items()})
    seconds = sum(step["seconds"] for steps in passes for step in steps)
    return {
        "docs_in": read[1],
        "docs_out": last[1],
        "bytes_in": read[2],
        "bytes_out": last[2],
        "kept_fraction": last[1] / read[1] if read[1] else 0.0,
        "steps": rows,
        "top_rejections": top.most_common(10),
        "ingest": ingest,
        "pipeline_cpu_seconds": round(seconds, 3),
    }


def write_report(report: dict[str, Any], folder: Path) -> list[Path]:
    """``report.json`` and ``report.html`` in ``folder``, each written atomically; their paths."""
    paths = [folder / "report.json", folder / "report.html"]
    atomic_write_json(paths[0], report)
    atomic_write_text(paths[1], render_html(report))
    return paths


def stage_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a finished stage's report: its ``metrics.json`` for ``dvc
    metrics`` and, flattened, its MLflow metrics."""
    split, labeled = report["split"], report["labeled"]
    metrics = {
        "docs_in": report["docs_in"],
        "docs_out": report["docs_out"],
        "bytes_in": report["bytes_in"],
        "bytes_out": report["bytes_out"],
        "kept_fraction": round(report["kept_fraction"], 6),
        "train_documents": split["train_documents"],
        "val_documents": split["val_documents"],
        "labeled_train": labeled["train"],
        "labeled_test": labeled["test"],
        "dropped": {s["name"]: s["dropped"] for s in report["steps"]},
    }
    if "minhash" in report:
        metrics["near_dup_pairs"] = report["minhash"]["verified_pairs"]
    return metrics


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f}"


def render_table(report: dict[str, Any]) -> list[str]:
    """The short table the stage prints: one line per step, then the top rejection reasons,
    then (once the corpus and the labeled set are written) the size of each split."""
    lines = [f"{'step':<20} {'docs in':>9} {'docs out':>9} {'MB in':>8} {'MB out':>8}  kept"]
    for s in report["steps"]:
        kept = s["docs_out"] / s["docs_in"] if s["docs_in"] else 1.0
        lines.append(
            f"{s['name']:<20} {s['docs_in']:>9} {s['docs_out']:>9} {_mb(s['bytes_in']):>8} "
            f"{_mb(s['bytes_out']):>8}  {kept:6.1%}"
        )
    lines.append(
        f"{'total':<20} {report['docs_in']:>9} {report['docs_out']:>9} "
        f"{_mb(report['bytes_in']):>8} {_mb(report['bytes_out']):>8}  {report['kept_fraction']:6.1%}"
    )
    if report["top_rejections"]:
        top = ", ".join(f"{name} {n}" for name, n in report["top_rejections"][:5])
        lines.append(f"most common rejections: {top}")
    if "split" in report and "labeled" in report:
        split = report["split"]
        lines.append(
            f"train {split['train_documents']} docs, val {split['val_documents']} docs; "
            f"labeled {report['labeled']}"
        )
    return lines


def _clip(text: str, n: int = EXAMPLE_CHARS) -> str:
    return text if len(text) <= n else text[:n] + " …"


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page of the report (no scripts, no external assets)."""
    e = html.escape
    parts = [
        "<!doctype html><meta charset='utf-8'><title>lmops clean report</title>",
        "<style>body{font:14px sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:6px;max-width:60em}</style>",
        "<h1>Clean stage report</h1>",
        "<table><tr><th>step</th><th>docs in</th><th>docs out</th><th>MB in</th><th>MB out</th>"
        "<th>reasons</th></tr>",
    ]
    for s in report["steps"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in s["reasons"].items())
        parts.append(
            f"<tr><td>{e(s['name'])}</td><td>{s['docs_in']}</td><td>{s['docs_out']}</td>"
            f"<td>{_mb(s['bytes_in'])}</td><td>{_mb(s['bytes_out'])}</td>"
            f"<td style='text-align:left'>{e(reasons)}</td></tr>"
        )
    parts.append(
        f"<tr><th>total</th><th>{report['docs_in']}</th><th>{report['docs_out']}</th>"
        f"<th>{_mb(report['bytes_in'])}</th><th>{_mb(report['bytes_out'])}</th>"
        f"<th>{report['kept_fraction']:.1%} kept</th></tr></table>"
    )
    parts.append("<h2>Reading</h2><pre>" + e(json.dumps(report["ingest"], indent=2)) + "</pre>")
    examples = report.get("examples", {})
    for kind in ("exact_duplicates", "near_duplicates"):
        items = examples.get(kind) or []
        if items:
            parts.append(f"<h2>{e(kind.replace('_', ' '))}: examples</h2>")
            for example in items:
                parts.append(
                    f"<p>removed <code>{e(str(example.get('removed_id')))}</code>, kept "
                    f"<code>{e(str(example.get('kept_id')))}</code></p>"
                    f"<pre>{e(_clip(example.get('removed_text', '')))}</pre>"
                )
                kept_text = example.get("kept_text")
                if kept_text and kept_text != example.get("removed_text"):
                    parts.append(f"<pre>{e(_clip(kept_text))}</pre>")
    for step, items in (examples.get("filtered") or {}).items():
        parts.append(f"<h2>removed by {e(step)}: examples</h2>")
        for example in items:
            parts.append(
                f"<p><code>{e(str(example.get('id')))}</code> "
                f"{e(str(example.get('reason') or ''))}</p>"
                f"<pre>{e(_clip(example.get('text', '')))}</pre>"
            )
    return "\n".join(parts) + "\n"
