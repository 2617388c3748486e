"""Human-facing evaluation outputs: a confusion-matrix picture and a short Markdown report."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from lmops.io import atomic_write_bytes


def plot_confusion(
    confusion: list[list[int]], labels: list[str], path: str | os.PathLike[str]
) -> Path:
    """Render the matrix to PNG ourselves: `dvc plots show` needs a CDN that is not there offline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.2 * n + 2))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    top = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            ax.text(
                j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black"
            )
    ax.set_title("confusion matrix (test split)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def markdown_report(metrics: dict[str, Any], labels: list[str], confusion: list[list[int]]) -> str:
    """A one-page summary a person reads in the MLflow UI without opening JSON."""
    lines = ["# lmops evaluation", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if isinstance(v, float)]
    lines += ["", "## Confusion matrix (rows: actual, columns: predicted)", ""]
    lines.append("| | " + " | ".join(labels) + " |")
    lines.append("| --- " * (len(labels) + 1) + "|")
    for label, row in zip(labels, confusion, strict=True):
        lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def generation_report(metrics: dict[str, Any], samples: list[dict[str, str]]) -> str:
    """The metrics, then prompt / references / output for a sample of the test prompts."""
    lines = ["# lmops evaluation", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if isinstance(v, float)]
    if samples:
        lines += [
            "",
            "## Sample answers",
            "",
            "| prompt | references | output |",
            "| --- | --- | --- |",
        ]
        lines += [
            f"| {_cell(r['prompt'])} | {_cell(r['references'])} | {_cell(r['output'])} |"
            for r in samples
        ]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")
