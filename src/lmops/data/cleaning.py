"""The clean stage as a library: raw documents in, a filtered, deduplicated, split corpus out.

Why each step: unicode normalization makes the same text the same bytes (so dedup and the
tokenizer see one form); control characters and whitespace runs are noise the model would
otherwise spend capacity on; quality rules (Gopher, C4) drop boilerplate, lists and junk;
exact and near duplicates inflate some text's weight and leak between train and val. The
report makes each effect visible in MLflow and ``dvc metrics``.

How: the documents are written as shards into a work folder (:mod:`lmops.data.ingest`), then a
few datatrove passes run over them (:mod:`lmops.data.executors`: this machine's cores, slurm or
ray): per-document steps (:mod:`lmops.data.filters`), exact dedup and MinHash near-dedup
(:mod:`lmops.data.dedup`). The surviving documents are read back in input order and written as
train / val JSONL (split by a hash of the document id: streaming, and stable when the corpus
grows). Memory stays bounded by a shard, whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from datatrove.utils.word_tokenizers import WordTokenizer

from lmops.config import CleanConfig, DataExecutorConfig, LmopsError, Params, to_flat_dict
from lmops.data.dedup import exact_stages, minhash_stages
from lmops.data.executors import Pass, datatrove_logs_to, run_passes
from lmops.data.filters import (
    FastWordTokenizer,
    LengthFilter,
    build_document_steps,
    require_language_support,
    word_tokenizer_for,
)
from lmops.data.ingest import (
    RankJsonlReader,
    iter_shards,
    read_ingest_marker,
    shard_writer,
    write_input_shards,
)
from lmops.data.report import (
    SampleWriter,
    StepMeter,
    build_report,
    read_pass_stats,
    read_samples,
)
from lmops.data.sources import IngestStats, Source, SourceDocument

__all__ = [
    "CleanRun",
    "remove_work",
    "run_clean",
    "work_dir",
    "write_splits",
]

log = logging.getLogger(__name__)

# Which params to relax when a step removed everything.
_STEP_PARAMS = {
    "length": "clean.min_chars / clean.max_chars",
    "gopher_repetition": "clean.gopher_repetition.*",
    "gopher_quality": "clean.language (the corpus' language) or clean.gopher_quality.*",
    "fineweb_quality": "clean.language or clean.fineweb_quality.line_punct_thr",
    "c4": "clean.c4.*",
    "length_after_c4": "clean.min_chars or clean.c4.*",
}
EXAMPLES = 3


@dataclass
class CleanRun:
    """Where a finished run's documents are, and its report (not yet with split counts)."""

    work: Path
    final: Path
    shards: int
    report: dict[str, Any]


# ----------------------------------------------------------------------------- pipeline


def _document_steps(
    cfg: CleanConfig, work: str, tokenizer: WordTokenizer
) -> tuple[list[Any], dict[str, str]]:
    """Per-document steps with a meter after each; and datatrove step name -> report name."""
    names = [
        "length",
        "gopher_repetition",
        "gopher_quality",
        "fineweb_quality",
        "c4",
        "length_after_c4",
    ]
    writers = {n: SampleWriter(f"{work}/removed/{n}", limit=EXAMPLES) for n in names}
    steps = build_document_steps(cfg, tokenizer, writers)
    if cfg.c4.enabled:  # C4 removes lines: a document can end up shorter than min_chars
        again = LengthFilter(
            cfg.min_chars, cfg.max_chars, writers["length_after_c4"], name="📏 Length after C4"
        )
        steps.append(("length_after_c4", again))
    pipeline: list[Any] = []
    step_names: dict[str, str] = {}
    for label, step in steps:
        pipeline += [step, StepMeter(label)]
        step_names[step.name] = label
    return pipeline, step_names


def _passes(cfg: CleanConfig, work: str, shards: int) -> tuple[list[Pass], dict[str, str], str]:
    """The datatrove passes for ``cfg``; the step-name map; the folder of the survivors."""
    # the rules split words the language's way; MinHash shingles stay on the regex splitter
    # (one token per CJK character makes fine shingles, and it is fast in every language)
    doc_steps, names = _document_steps(cfg, work, word_tokenizer_for(cfg.language))
    tok = FastWordTokenizer()
    passes: list[Pass] = []
    first = [RankJsonlReader(f"{work}/ingest"), StepMeter("read"), *doc_steps]
    first.append(shard_writer(f"{work}/filtered"))
    # Every signature is computed in this one pass over the text; later passes read only the
    # small signature files, and one final pass reads the survivors and writes them.
    exact = exact_stages(work) if cfg.exact_dedup else None
    mh = (
        minhash_stages(work, cfg.minhash, tok, exact_dedup=cfg.exact_dedup)
        if cfg.minhash.enabled
        else None
    )
    if exact:
        first.append(exact["signature"])
    if mh:
        first.append(mh["signature"])
    passes.append(Pass("filter", "filters", first, shards))
    last: list[Any] = [RankJsonlReader(f"{work}/filtered")]
    if exact:
        passes.append(Pass("exact_find", "exact duplicates", [exact["find"]], 1))
        dedup = exact["filter"](SampleWriter(f"{work}/removed/exact", limit=EXAMPLES))
        names[dedup.name] = "exact_dedup"
        last += [dedup, StepMeter("exact_dedup")]
    if mh:
        # small tasks: the index runs in this process; the bands get a pool only for many shards
        small = 1 if shards <= 2 else None
        passes.append(Pass("minhash_index", "near-duplicate index", mh["index"], shards, 1))
        pairs = [mh["buckets"], mh["verify"]]
        passes.append(
            Pass("minhash_pairs", "near-duplicate pairs", pairs, cfg.minhash.bands, small)
        )
        passes.append(Pass("minhash_cluster", "near-duplicate clusters", [mh["cluster"]], 1))
        near = mh["filter"](SampleWriter(f"{work}/removed/near", limit=EXAMPLES))
        names[near.name] = "near_dedup"
        last += [near, StepMeter("near_dedup")]
    if not (exact or mh):
        return passes, names, f"{work}/filtered"
    last.append(shard_writer(f"{work}/final"))
    passes.append(Pass("dedup", "dedup", last, shards))
    return passes, names, f"{work}/final"


def run_clean(
    documents: Iterable[SourceDocument],
    cfg: CleanConfig,
    work: Path,
    *,
    executor: DataExecutorConfig | None = None,
    ingest: IngestStats | None = None,
    progress: bool = False,
) -> CleanRun:
    """Shard ``documents`` into ``work`` and run the cleaning passes over them.

    Resumes: shards of an earlier run with a completion marker are reused, and finished
    datatrove tasks are skipped. Raises :class:`LmopsError` when no document was read, or
    when the filters removed every document (naming the params to change).
    """
    require_language_support(cfg.language)  # a missing segmenter fails before any reading
    executor = executor or DataExecutorConfig()
    work.mkdir(parents=True, exist_ok=True)
    ingest = ingest or IngestStats()
    counts = read_ingest_marker(work / "ingest")
    if counts is None:
        shard_bytes = int(cfg.shard_mb * 1e6)
        counts = write_input_shards(
            _with_progress(documents, progress), work / "ingest", shard_bytes
        )
        (work / "ingest_stats.json").write_text(json.dumps(ingest.as_dict()))
    ingest_report = (
        json.loads((work / "ingest_stats.json").read_text())
        if (work / "ingest_stats.json").is_file()
        else ingest.as_dict()
    )
    if counts["documents"] == 0:
        raise LmopsError(
            "the corpus has no documents (nothing readable in data.corpus_paths: "
            f"{ingest_report.get('binary_files_skipped', 0)} binary files skipped, "
            f"{ingest_report.get('empty_documents', 0)} empty documents); check data.corpus_paths"
        )
    shards = counts["shards"]
    passes, names, final = _passes(cfg, str(work), shards)
    (work / "exact" / "duplicates").mkdir(parents=True, exist_ok=True)  # may get no file
    with datatrove_logs_to(work / "logs" / "datatrove.log"):
        folders = run_passes(passes, executor, work / "logs", progress=progress)
    stats = [read_pass_stats(folders[p.name]) for p in passes]
    report = build_report(stats, names, ingest=ingest_report)
    report["shards"] = shards
    report["pass_seconds"] = {p.name: round(p.seconds, 3) for p in passes}
    if cfg.minhash.enabled:
        pair_stats = read_pass_stats(folders["minhash_pairs"])
        verify = next((s["stats"] for s in pair_stats if "verify" in s["name"]), {})
        report["minhash"] = {
            "candidate_pairs": int(verify.get("candidate_pairs", 0)),
            "verified_pairs": int(verify.get("verified_pairs", 0)),
            "threshold": cfg.minhash.threshold,
        }
    report["examples"] = {
        "filtered": {
            step: [
                {
                    "id": d["id"],
                    "reason": d.get("metadata", {}).get("filter_reason"),
                    "text": d.get("text", ""),
                }
                for d in read_samples(work / "removed" / step, EXAMPLES)
            ]
            for step in _STEP_PARAMS
            if (work / "removed" / step).is_dir()
        }
    }
    if report["docs_out"] == 0:
        raise LmopsError(_empty_message(report, cfg))
    return CleanRun(work=work, final=Path(final), shards=shards, report=report)


def _with_progress(documents: Iterable[SourceDocument], enabled: bool) -> Iterator[SourceDocument]:
    from tqdm.auto import tqdm

    with tqdm(desc="clean: reading", unit="doc", disable=None if enabled else True) as bar:
        for doc in documents:
            bar.update()
            yield doc


def _empty_message(report: dict[str, Any], cfg: CleanConfig) -> str:
    """One line saying what removed everything and which params to change.

    The length step is told apart by its reasons: documents dropped as too long need a higher
    ``clean.max_chars`` (or smaller documents: a .txt file read whole, say), not a lower
    ``clean.min_chars``; pointing at the wrong end sends a user the wrong way.
    """
    by_step = sorted(report["steps"], key=lambda s: -s["dropped"])
    culprits = [s for s in by_step if s["dropped"] and s["name"] in _STEP_PARAMS]
    reasons = ", ".join(f"{name} {n}" for name, n in report["top_rejections"][:3]) or "none"
    length = next((s.get("reasons", {}) for s in report["steps"] if s["name"] == "length"), {})
    fixes = []
    if length.get("too_long"):
        fixes.append(
            f"raise clean.max_chars (documents longer than {cfg.max_chars} characters; a .txt "
            "file is cut by data.txt_split / data.txt_block_chars)"
        )
    others = [_STEP_PARAMS[s["name"]] for s in culprits if s["name"] != "length"]
    if length.get("too_short") or not (fixes or others):
        fixes.append(f"lower clean.min_chars (now {cfg.min_chars})")
    relax = ", ".join(dict.fromkeys(others)) or "the filters"
    fixes.append(f"relax {relax} (or turn them off)")
    return (
        f"the corpus is empty after cleaning ({report['docs_in']} documents in; removed by: "
        f"{reasons}); {' or '.join(fixes)}, or check data.corpus_paths"
    )


# ----------------------------------------------------------------------------- outputs


def _unit(seed: int, purpose: str, key: str) -> float:
    """A deterministic number in [0, 1) for ``key``: stable across runs, machines and order."""
    digest = hashlib.blake2b(f"{seed}:{purpose}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def write_splits(
    run: CleanRun,
    out_dir: Path,
    *,
    val_fraction: float,
    seed: int,
    weights: Sequence[float] = (),
) -> dict[str, Any]:
    """Write ``train.jsonl`` / ``val.jsonl`` (rows ``{"id", "text"}``) from the survivors.

    A document goes to val when a hash of its id falls below ``val_fraction`` (copies made by
    a source weight follow their original, so val never sees a train document). With two or
    more documents, each split gets at least one. Also fills the report's duplicate examples.
    Returns the split counts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    exact = read_samples(run.work / "removed" / "exact", EXAMPLES)
    near = read_samples(run.work / "removed" / "near", EXAMPLES)
    want_text = {hashlib.sha1(d["text"].encode()).hexdigest(): d for d in exact}
    want_cluster = {d["metadata"].get("minhash_cluster_id"): d for d in near}
    found_exact: dict[str, dict] = {}
    found_near: dict[Any, dict] = {}
    counts = {"train": 0, "val": 0}
    mixed_in = 0
    last: dict[str, tuple[int, bytes] | None] = {"train": None, "val": None}
    with open(out_dir / "train.jsonl", "wb") as train, open(out_dir / "val.jsonl", "wb") as val:
        files = {"train": train, "val": val}
        for row in iter_shards(run.final, run.shards):
            mixed_in += 1
            text, base = row["text"], row["id"]
            meta = row.get("metadata") or {}
            if want_text and len(found_exact) < len(want_text):
                h = hashlib.sha1(text.encode()).hexdigest()
                if h in want_text and h not in found_exact:
                    found_exact[h] = row
            cid = meta.get("minhash_cluster_id", -1)
            if cid is not None and cid != -1 and cid in want_cluster and cid not in found_near:
                found_near[cid] = row
            w = float(weights[meta.get("source", 0)]) if weights else 1.0
            copies = int(w) + (1 if _unit(seed, "weight", base) < w - int(w) else 0)
            split = "val" if _unit(seed, "split", base) < val_fraction else "train"
            for k in range(copies):
                line = orjson.dumps(
                    {"id": base if k == 0 else f"{base}+{k}", "text": text},
                    option=orjson.OPT_APPEND_NEWLINE,
                )
                last[split] = (files[split].tell(), line)
                files[split].write(line)
                counts[split] += 1
    if val_fraction > 0:
        _balance(out_dir, counts, last)
    run.report["mix"] = {"docs_in": mixed_in, "docs_out": counts["train"] + counts["val"]}
    run.report["split"] = {"train_documents": counts["train"], "val_documents": counts["val"]}
    run.report["examples"]["exact_duplicates"] = [
        {
            "removed_id": d["id"],
            "kept_id": found_exact.get(hashlib.sha1(d["text"].encode()).hexdigest(), {}).get("id"),
            "removed_text": d["text"],
        }
        for d in exact
    ]
    run.report["examples"]["near_duplicates"] = [
        {
            "removed_id": d["id"],
            "removed_text": d["text"],
            "kept_id": found_near.get(d["metadata"].get("minhash_cluster_id"), {}).get("id"),
            "kept_text": found_near.get(d["metadata"].get("minhash_cluster_id"), {}).get("text"),
        }
        for d in near
    ]
    return counts


def _balance(
    out_dir: Path, counts: dict[str, int], last: dict[str, tuple[int, bytes] | None]
) -> None:
    """Move the last document of a split into the other one when that one came out empty."""
    for empty, full in (("val", "train"), ("train", "val")):
        if counts[empty] == 0 and counts[full] >= 2 and last[full] is not None:
            offset, line = last[full]
            with open(out_dir / f"{full}.jsonl", "r+b") as fh:
                fh.truncate(offset)
            with open(out_dir / f"{empty}.jsonl", "ab") as fh:
                fh.write(line)
            counts[full] -= 1
            counts[empty] += 1


def work_dir(params: Params, sources: Iterable[Source], root: Path) -> Path:
    """The work folder of a clean run: ``clean-<fingerprint>`` in
    ``hardware.data_executor.work_dir`` (relative to ``root`` unless absolute).

    The fingerprint is a short hash of what the run depends on: the ``data`` and ``clean``
    params, the local input files (names, sizes, modification times) and the code of the
    ``lmops.data`` modules; so an interrupted run resumes only into work done with the same
    params on the same files.
    """
    settings = {"data": to_flat_dict(params.data), "clean": to_flat_dict(params.clean)}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in (s.path for s in sources if s.path is not None):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                st = f.stat()
                h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    for module in sorted(Path(__file__).parent.glob("*.py")):
        h.update(module.read_bytes())
    return params.hardware.data_executor.work_root(root) / f"clean-{h.hexdigest()[:16]}"


def remove_work(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
