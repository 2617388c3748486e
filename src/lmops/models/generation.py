"""Text generation: its arguments, the batched KV-cache decoding loop, and streaming decode.

    GenerationParams   max_new_tokens, temperature, top_k, top_p, stop, seed: one checked
                       dataclass that the CLI, the MLflow pyfunc and the bundle functions share
    sample_next        one token per row from last-position logits (greedy, top-k, top-p)
    BatchDecoder       prompts of different lengths in one forward pass: left-padded, every row
                       with its own positions and a mask that hides the padding, KV cache
    TextStream         a row's new tokens as text pieces that are safe to print as they come
                       (no half of a multi-byte character, no start of a stop string)

Why left padding: every row then ends at the same column, so each decoding step appends one
column to all rows and the per-layer KV cache stays one rectangular buffer. Each row's positions
start at 0 at its first real token and the padded columns are masked out as keys, so a row's
tokens are those it would get alone. A batch without padding (all prompts of one length) runs
exactly the plain causal path, bit for bit.

Tokens only here (no tokenizer): ``TextStream`` takes a ``decode`` function, and
``lmops.export.bundle`` wires both to a bundle's tokenizer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from lmops.config import LmopsError

if TYPE_CHECKING:
    from lmops.models.gpt import GPT

__all__ = ["BatchDecoder", "GenerationParams", "TextStream", "sample_next"]

# What "off" reads like in a schema that has no null: MLflow params need a typed default.
_SCHEMA_OFF = {"top_k": 0, "top_p": 1.0, "seed": -1}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerationParams:
    """How to continue a prompt; every consumer (CLI, pyfunc, bundle functions) builds one.

    - ``max_new_tokens``: at most this many tokens after the prompt (the end-of-text token stops
      a row earlier).
    - ``temperature``: 0 is greedy (argmax); higher flattens the distribution.
    - ``top_k``: sample among the k most likely tokens only (None or 0: all).
    - ``top_p``: nucleus sampling, the smallest set of tokens whose probability reaches p
      (None or 1.0: all).
    - ``stop``: strings that end a row's text; the text is cut before the first one.
    - ``seed``: repeatable sampling; the i-th prompt of a batch draws from ``seed + i``, so a
      prompt's text does not depend on what else is in the batch. The caller's global RNG is
      never touched.

    Checked on construction: a wrong value fails with one line naming the param.
    """

    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 0:
            raise LmopsError(f"max_new_tokens is {self.max_new_tokens!r}; must be an integer >= 0")
        if (
            not isinstance(self.temperature, int | float)
            or isinstance(self.temperature, bool)
            or not math.isfinite(self.temperature)
            or self.temperature < 0
        ):
            raise LmopsError(
                f"temperature is {self.temperature!r}; must be a number >= 0 (0: greedy)"
            )
        object.__setattr__(self, "temperature", float(self.temperature))
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 0):
            raise LmopsError(f"top_k is {self.top_k!r}; must be an integer >= 1 (0 or None: off)")
        if self.top_k == 0:
            object.__setattr__(self, "top_k", None)
        if self.top_p is not None:
            if (
                not isinstance(self.top_p, int | float)
                or isinstance(self.top_p, bool)
                or not 0.0 < self.top_p <= 1.0
            ):
                raise LmopsError(f"top_p is {self.top_p!r}; must be in (0, 1] (1 or None: off)")
            object.__setattr__(self, "top_p", None if self.top_p == 1.0 else float(self.top_p))
        stop = (self.stop,) if isinstance(self.stop, str) else self.stop
        if not isinstance(stop, Sequence) or not all(isinstance(s, str) and s for s in stop):
            raise LmopsError(f"stop is {self.stop!r}; must be a list of non-empty strings")
        object.__setattr__(self, "stop", tuple(stop))
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise LmopsError(f"seed is {self.seed!r}; must be an integer >= 0 (None: unseeded)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def replace(self, **changes: Any) -> GenerationParams:
        """A copy with ``changes``; an unknown name is a one-line error, not a TypeError."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise LmopsError(
                f"unknown generation param {unknown[0]!r}; expected one of "
                f"{', '.join(f.name for f in dataclasses.fields(self))}"
            )
        return dataclasses.replace(self, **changes)

    def to_schema(self) -> dict[str, Any]:
        """These params as MLflow param defaults: typed values, "off" spelled as 0 / 1.0 / -1
        (an MLflow param cannot default to null), ``stop`` as a list of strings."""
        out: dict[str, Any] = dataclasses.asdict(self)
        for name, off in _SCHEMA_OFF.items():
            if out[name] is None:
                out[name] = off
        out["stop"] = list(self.stop)
        return out

    @classmethod
    def from_schema(cls, values: Mapping[str, Any], defaults: GenerationParams) -> GenerationParams:
        """``defaults`` with ``values`` (a request's params, schema spelling) applied: the
        schema's "off" values (top_k 0, top_p 1.0, seed -1) become None; numpy scalars and
        arrays (what MLflow hands over) become Python values."""
        changes: dict[str, Any] = {}
        for name, value in values.items():
            if hasattr(value, "tolist"):  # numpy scalar or array
                value = value.tolist()
            if name in _SCHEMA_OFF and value == _SCHEMA_OFF[name]:
                value = None
            if name == "stop" and isinstance(value, list):
                value = tuple(value)
            changes[name] = value
        return defaults.replace(**changes)


# --------------------------------------------------------------------------- sampling


def sample_next(
    logits: torch.Tensor,
    params: GenerationParams,
    generators: Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """One token id per row [B] from last-position logits [B, vocab] (float32).

    Greedy is an argmax. Otherwise temperature, then top-k, then top-p filter the distribution.
    ``generators`` (one per row) make each row's draw depend on its own seed only; without them
    the rows draw from the global RNG.
    """
    if params.greedy:
        return logits.argmax(dim=-1)
    logits = logits / params.temperature
    if params.top_k is not None:
        k = min(params.top_k, logits.size(-1))
        kth = torch.topk(logits, k).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the ones above it already reach p; the most likely always stays
        drop = probs.cumsum(dim=-1) - probs >= params.top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = F.softmax(logits, dim=-1)
    if generators is None:
        return torch.multinomial(probs, num_samples=1)[:, 0]
    return torch.cat(
        [
            torch.multinomial(probs[row : row + 1], num_samples=1, generator=g)[:, 0]
            for row, g in enumerate(generators)
        ]
    )


def row_generators(
    seeds: Sequence[int] | None, device: torch.device
) -> list[torch.Generator] | None:
    """One seeded RNG per row (None: draw from the global RNG)."""
    if seeds is None:
        return None
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


# --------------------------------------------------------------------------- decoding loop


class BatchDecoder:
    """Generate for several prompts at once, one step (one token per row) at a time.

    ``for tokens, active in decoder`` yields each step's token per row [B] and which rows were
    still running before it [B] (finished rows get ``eos_id``, or ``pad_id`` without one). A
    row finishes at ``eos_id`` or when the caller calls :meth:`finish` (a stop string).
    Iteration ends after ``max_new_tokens`` steps or when every row has finished.

    Prompts longer than ``block_size`` keep their last ``block_size`` tokens (the caller warns).
    With ``use_cache`` each step feeds one new column while the padded batch fits the window;
    once it would not, the window slides and each step recomputes every row's last
    ``block_size`` tokens, as the cache-free path does every step.
    """

    def __init__(
        self,
        model: GPT,
        prompts: Sequence[Sequence[int]] | torch.Tensor,
        params: GenerationParams,
        *,
        eos_id: int | None = None,
        pad_id: int = 0,
        use_cache: bool = True,
        seeds: Sequence[int] | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.eos_id = eos_id
        self.block_size = model.config.block_size
        device = model.lm_head.weight.device
        if isinstance(prompts, torch.Tensor):  # [B, T]: rows of one length, no padding
            if prompts.dim() != 2 or prompts.size(1) == 0:
                raise LmopsError("generate needs a non-empty prompt of shape [batch, tokens]")
            tokens = prompts[:, -self.block_size :].to(device)
            pad = torch.zeros(tokens.size(0), dtype=torch.long, device=device)
        else:
            rows = [list(p)[-self.block_size :] for p in prompts]
            if not rows or any(not r for r in rows):
                raise LmopsError("generate needs at least one prompt, each with tokens")
            width = max(len(r) for r in rows)
            tokens = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
            for i, r in enumerate(rows):
                tokens[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            pad = torch.tensor([width - len(r) for r in rows], dtype=torch.long, device=device)
        self.fill = eos_id if eos_id is not None else pad_id
        self.tokens = tokens  # the window so far, left-padded: [B, W]
        self.pad = pad  # padded columns at the left of each row of ``tokens``
        if seeds is not None and len(seeds) != tokens.size(0):
            raise LmopsError(f"{len(seeds)} seeds for {tokens.size(0)} prompts")
        self.generators = None if params.greedy else row_generators(seeds, device)
        self.caches = model.new_kv_caches() if use_cache else None
        self.pending = tokens  # what the next forward pass consumes
        self.finished = torch.zeros(tokens.size(0), dtype=torch.bool, device=device)
        self.steps = 0

    def finish(self, row: int) -> None:
        """End ``row`` now (e.g. its text reached a stop string)."""
        self.finished[row] = True

    @torch.no_grad()
    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass: ``(next token per row [B], rows active before this step [B])``."""
        # No padding: pass nothing, so the plain causal path (SDPA's fused kernel) runs.
        left_pad = self.pad if bool(self.pad.any()) else None
        hidden = self.model._trunk(self.pending, self.caches, left_pad=left_pad)
        logits = self.model.lm_head(hidden[:, -1, :]).float()
        token = sample_next(logits, self.params, self.generators)
        active = ~self.finished
        token = torch.where(active, token, self.fill)
        if self.eos_id is not None:
            self.finished |= token == self.eos_id
        self.tokens = torch.cat((self.tokens, token[:, None]), dim=1)
        self.steps += 1
        if self.caches is not None and self.caches[0].length < self.block_size:
            self.pending = token[:, None]
        else:
            # the window slides from here on: recompute each row's last block_size tokens
            self.caches = None
            cut = self.tokens.size(1) - self.block_size
            if cut > 0:
                self.tokens = self.tokens[:, cut:]
                self.pad = (self.pad - cut).clamp(min=0)
            self.pending = self.tokens
        return token, active

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while self.steps < self.params.max_new_tokens and not bool(self.finished.all()):
            yield self.step()


def left_pad_layout(
    left_pad: torch.Tensor, start: int, length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(position_ids [B, T], attention mask [B, 1, T, start + T])`` for columns
    ``start .. start+T-1`` of left-padded rows (``left_pad`` [B]: padded columns per row).

    A row's positions count from 0 at its first real token. A query sees earlier keys of real
    tokens only; a padded query also sees itself, so no mask row is empty (SDPA's softmax over
    nothing is NaN); what padded positions compute is never read.
    """
    device = left_pad.device
    cols = torch.arange(start, start + length, device=device)  # query columns [T]
    keys = torch.arange(start + length, device=device)  # key columns [S]
    position_ids = (cols[None, :] - left_pad[:, None]).clamp(min=0)
    real_key = keys[None, None, :] >= left_pad[:, None, None]  # [B, 1, S]
    causal = keys[None, :] <= cols[:, None]  # [T, S]
    itself = keys[None, :] == cols[:, None]
    mask = causal[None] & (real_key | itself[None])  # [B, T, S]
    return position_ids, mask.unsqueeze(1)


# --------------------------------------------------------------------------- text streaming


class TextStream:
    """One row's continuation as text, piece by piece, for printing as tokens come.

    Byte-level BPE splits multi-byte characters across tokens: decoding a token alone can end in
    half a character (U+FFFD). We decode a short window of recent ids (vLLM's incremental
    detokenizer) and hand out text only once it ends in a whole character. With ``stop`` strings
    a tail that could still become a stop string is held back, and the text ends before the
    first stop string found (``stopped`` turns true).
    """

    def __init__(
        self,
        decode: Callable[[list[int]], str],
        prompt_ids: Sequence[int],
        stop: Sequence[str] = (),
    ) -> None:
        self._decode = decode
        self._ids = list(prompt_ids)
        self._prefix = 0  # the window decoded to find what is new: ids[_prefix:]
        self._read = len(self._ids)  # ids before this are in ``text`` (or the prompt)
        self._stop = tuple(stop)
        self._searched = 0  # text before this holds no stop string
        self._emitted = 0
        self.text = ""
        self.stopped = False

    def push(self, token_id: int) -> str:
        """Add one generated token; return the text that may be shown now (often '')."""
        if self.stopped:
            return ""
        self._ids.append(int(token_id))
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self._ids)
        if self._stop:
            self._find_stop()
        return self._take(final=False)

    def flush(self) -> str:
        """The text not yet handed out. At the end a held-back tail is plain text, and bytes
        that never completed a character decode as U+FFFD, as the full decode shows them."""
        if not self.stopped and self._read < len(self._ids):
            before = self._decode(self._ids[self._prefix : self._read])
            self.text += self._decode(self._ids[self._prefix :])[len(before) :]
            self._prefix = self._read = len(self._ids)
            if self._stop:
                self._find_stop()
        return self._take(final=True)

    def _find_stop(self) -> None:
        longest = max(len(s) for s in self._stop)
        from_ = max(0, self._searched - longest + 1)
        hits = [i for i in (self.text.find(s, from_) for s in self._stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
        self._searched = len(self.text)

    def _take(self, final: bool) -> str:
        end = len(self.text)
        if not final and not self.stopped:
            end -= self._held()
        piece = self.text[self._emitted : end] if end > self._emitted else ""
        self._emitted = max(self._emitted, end)
        return piece

    def _held(self) -> int:
        """Length of the longest tail of ``text`` that a stop string starts with."""
        best = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best
