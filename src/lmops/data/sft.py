"""Prompt -> response fine-tuning (SFT) data: encoding with prompt-loss masking, and packing.

An example is the templated prompt, the response and an end-of-text token. The model learns the
response only: every prompt position's target is -100 (ignored by the loss), the response and
the EOS are targets. Targets are shifted here, the way :class:`lmops.models.gpt.GPT` scores them
(``logits[t]`` against ``labels[t]``): for the sequence ``s = prompt + response + [eos]``,
``input_ids = s[:-1]`` and ``labels[t] = s[t + 1]`` where ``s[t + 1]`` is a response token or
the EOS, else -100.

An example longer than the context (``max_length``, the model's ``block_size``) is either
truncated from the left of the user's prompt (its end, the template and the whole response are
kept) or dropped; :class:`SFTCounts` says how many of each, so a stage can report them.

Packing puts several whole examples into one ``block_size`` row, in order, greedily, and never
splits one. Each row carries ``segment_ids`` (which example a position belongs to) and
``position_ids`` (restarting at 0 in each example) so that the GPT attends block-diagonally and
gives each example the same positions, hence the same loss, as alone (torchtune's packing does
the same; naive concatenation would let examples attend to each other). The padded tail is a
segment of its own with -100 targets.

Several rows with the same prompt are several references for it: :func:`group_references`
collects them and :func:`split_by_prompt` keeps all rows of a prompt in one split.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from lmops.config import OVERFLOW_MODES, LmopsError
from lmops.io import read_jsonl

if TYPE_CHECKING:  # the clean stage splits SFT data with this module: torch only to collate
    import torch

__all__ = [
    "IGNORE_INDEX",
    "OVERFLOW_MODES",
    "PROMPT_FIELD",
    "PackedRow",
    "SFTCounts",
    "SFTExample",
    "build_example",
    "collate_packed",
    "collate_padded",
    "encode_examples",
    "encode_prompt",
    "group_references",
    "read_pairs",
    "pack",
    "split_by_prompt",
    "split_template",
]

IGNORE_INDEX = -100  # the GPT's cross-entropy ignore_index
PROMPT_FIELD = "{prompt}"


@dataclass(frozen=True)
class SFTExample:
    """One encoded example: ``input_ids`` and next-token ``labels`` of equal length."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False  # the prompt lost tokens from its left to fit

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class SFTCounts:
    """What encoding did: ``kept`` examples (``truncated`` of them cut to fit), ``dropped`` ones
    (too long under ``overflow="drop"``, too long even without the prompt, or nothing to
    predict)."""

    kept: int = 0
    truncated: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class PackedRow:
    """One ``block_size`` row of whole examples, then padding (its own segment, -100 labels)."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    segment_ids: list[int]


# ----------------------------------------------------------------------------- encoding


def split_template(template: str) -> tuple[str, str]:
    """The text before and after the single ``{prompt}`` of ``template``.

    Split rather than ``str.format``, so braces elsewhere in the template are plain text.
    """
    parts = template.split(PROMPT_FIELD)
    if len(parts) != 2:
        raise LmopsError(
            f"the prompt template {template!r} must contain {PROMPT_FIELD} exactly once"
        )
    return parts[0], parts[1]


def _ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    return [enc.ids for enc in tokenizer.encode_batch(list(texts), add_special_tokens=False)]


def encode_prompt(tokenizer: Tokenizer, prompt: str, template: str = PROMPT_FIELD) -> list[int]:
    """The ids the model sees before a response: template head, prompt, template tail, each
    encoded on its own exactly as in training. Generation must start from these ids."""
    head, tail = split_template(template)
    head_ids, prompt_ids, tail_ids = _ids(tokenizer, [head, prompt, tail])
    return head_ids + prompt_ids + tail_ids


def build_example(
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    *,
    eos_id: int,
    max_length: int,
    overflow: str = "truncate",
    head_ids: Sequence[int] = (),
    tail_ids: Sequence[int] = (),
) -> SFTExample | None:
    """The example for ``head + prompt + tail`` then ``response + [eos]``, or None when dropped.

    It fits when its ``input_ids`` (all those tokens but the final EOS) number at most
    ``max_length``. If not: ``overflow="drop"`` drops it; ``"truncate"`` keeps the last
    prompt tokens that fit, and drops it when not even one prompt token fits beside the
    template and the whole response.
    """
    if overflow not in OVERFLOW_MODES:
        raise LmopsError(f"overflow is {overflow!r}; use one of {OVERFLOW_MODES}")
    if max_length < 1:
        raise LmopsError(f"max_length is {max_length}; it must be >= 1")
    fixed = len(head_ids) + len(tail_ids) + len(response_ids)
    truncated = fixed + len(prompt_ids) > max_length
    if truncated:
        keep = max_length - fixed
        if overflow == "drop" or keep < 1 or not prompt_ids:
            return None
        prompt_ids = prompt_ids[-keep:]
    context = [*head_ids, *prompt_ids, *tail_ids]
    seq = [*context, *response_ids, eos_id]
    if len(seq) < 2:
        return None  # nothing before the EOS: no position to predict it from
    # labels[t] = seq[t + 1] for the response and EOS; the first token has no predictor
    labels = [IGNORE_INDEX] * max(len(context) - 1, 0) + seq[max(len(context), 1) :]
    return SFTExample(seq[:-1], labels, truncated)


def encode_examples(
    tokenizer: Tokenizer,
    rows: Iterable[tuple[str, str]],
    *,
    eos_id: int,
    max_length: int,
    template: str = PROMPT_FIELD,
    overflow: str = "truncate",
) -> tuple[list[SFTExample], SFTCounts]:
    """Encode ``(prompt, response)`` rows (see :func:`build_example`); the kept examples in row
    order, and the counts to report."""
    head, tail = split_template(template)
    head_ids, tail_ids = _ids(tokenizer, [head, tail])
    rows = list(rows)
    prompts = _ids(tokenizer, [prompt for prompt, _ in rows])
    responses = _ids(tokenizer, [response for _, response in rows])
    examples: list[SFTExample] = []
    counts = SFTCounts()
    for prompt_ids, response_ids in zip(prompts, responses, strict=True):
        example = build_example(
            prompt_ids,
            response_ids,
            eos_id=eos_id,
            max_length=max_length,
            overflow=overflow,
            head_ids=head_ids,
            tail_ids=tail_ids,
        )
        if example is None:
            counts.dropped += 1
            continue
        counts.kept += 1
        counts.truncated += example.truncated
        examples.append(example)
    return examples, counts


# ----------------------------------------------------------------------------- batches


def _packed_row(examples: Sequence[SFTExample], block_size: int, pad_id: int) -> PackedRow:
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    segment_ids: list[int] = []
    for segment, example in enumerate(examples):
        input_ids += example.input_ids
        labels += example.labels
        position_ids += range(len(example))
        segment_ids += [segment] * len(example)
    n_pad = block_size - len(input_ids)
    input_ids += [pad_id] * n_pad
    labels += [IGNORE_INDEX] * n_pad
    position_ids += range(n_pad)
    segment_ids += [len(examples)] * n_pad
    return PackedRow(input_ids, labels, position_ids, segment_ids)


def pack(examples: Iterable[SFTExample], block_size: int, *, pad_id: int) -> list[PackedRow]:
    """Whole examples, in order, into rows of exactly ``block_size`` positions (greedy: a row is
    closed when the next example does not fit in what is left of it)."""
    rows: list[PackedRow] = []
    current: list[SFTExample] = []
    used = 0
    for example in examples:
        if len(example) > block_size:
            raise LmopsError(
                f"an example of {len(example)} tokens does not fit block_size {block_size}; "
                "encode with max_length <= block_size"
            )
        if used + len(example) > block_size:
            rows.append(_packed_row(current, block_size, pad_id))
            current, used = [], 0
        current.append(example)
        used += len(example)
    if current:
        rows.append(_packed_row(current, block_size, pad_id))
    return rows


def collate_packed(rows: Sequence[PackedRow]) -> dict[str, torch.Tensor]:
    """``{"input_ids", "labels", "position_ids", "segment_ids"}``, LongTensors [B, block_size];
    pass all but ``labels`` to the GPT as keywords and ``labels`` as its targets."""
    import torch

    return {
        name: torch.tensor([getattr(row, name) for row in rows], dtype=torch.long)
        for name in ("input_ids", "labels", "position_ids", "segment_ids")
    }


def collate_padded(
    examples: Sequence[SFTExample], *, pad_id: int, length: int | None = None
) -> dict[str, torch.Tensor]:
    """One example per row, right-padded (``pad_id``, labels -100) to the longest or to
    ``length``: ``{"input_ids", "labels"}`` [B, T]. Plain causal attention suits it (padding
    only follows the example), so no segment or position ids are needed."""
    import torch

    width = max((len(e) for e in examples), default=0) if length is None else length
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for i, example in enumerate(examples):
        if len(example) > width:
            raise LmopsError(f"an example of {len(example)} tokens is longer than {width}")
        input_ids[i, : len(example)] = torch.tensor(example.input_ids, dtype=torch.long)
        labels[i, : len(example)] = torch.tensor(example.labels, dtype=torch.long)
    return {"input_ids": input_ids, "labels": labels}


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """``(prompt, response)`` rows of one split file, with a clear line when the file holds
    another task's rows (a classification set given to ``sft``)."""
    if not path.is_file():
        raise LmopsError(f"{path}: not found; run the clean stage (dvc repro clean)")
    rows = list(read_jsonl(path))
    if rows and not {"prompt", "response"} <= set(rows[0]):
        raise LmopsError(
            f"{path} holds {sorted(rows[0])} rows, not prompt / response: it was cleaned for "
            "another finetune.task; re-run the clean stage (dvc repro clean)"
        )
    return [(str(r["prompt"]), str(r["response"])) for r in rows]


# ----------------------------------------------------------------------------- references


def group_references(rows: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """Responses grouped by identical prompt: ``{prompt: [response, ...]}``, prompts and their
    responses in first-seen order. Scoring uses all of a prompt's responses as references."""
    groups: dict[str, list[str]] = {}
    for prompt, response in rows:
        groups.setdefault(prompt, []).append(response)
    return groups


def split_by_prompt(
    rows: Sequence[tuple[str, str]], *, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Deterministic ``(train, val, test)`` split of ``(prompt, response)`` rows in which all rows
    of one prompt land in the same split; each split keeps the input order.

    A seeded shuffle of the distinct prompts gives ``round(n * fraction)`` prompts to test and
    to val (at least one when the fraction is > 0), the rest to train, which must keep one.
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise LmopsError(f"{name} is {fraction}; it must be in [0, 1)")
    prompts = list(group_references(rows))
    n = len(prompts)
    n_val, n_test = (
        max(round(n * fraction), 1) if fraction > 0 else 0
        for fraction in (val_fraction, test_fraction)
    )
    if n - n_val - n_test < 1:
        raise LmopsError(
            f"{n} distinct prompts cannot fill a train split beside {n_val} val and {n_test} test "
            "prompts; add rows or lower the val / test fractions"
        )
    random.Random(seed).shuffle(prompts)
    split_of = {p: "test" for p in prompts[:n_test]}
    split_of.update({p: "val" for p in prompts[n_test : n_test + n_val]})
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "val": [], "test": []}
    for row in rows:
        splits[split_of.get(row[0], "train")].append(row)
    return splits["train"], splits["val"], splits["test"]
