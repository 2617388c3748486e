"""Generation: checked params, sampling filters, batches of mixed lengths, stop strings, streaming."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lmops.config import LmopsError, ModelConfig
from lmops.export.bundle import (
    Bundle,
    _decode,
    _prompt_ids,
    answer_greedy,
    generate_batch,
    generate_text,
    load_bundle,
    save_lm_bundle,
)
from lmops.models.generation import BatchDecoder, GenerationParams, TextStream, sample_next
from lmops.models.gpt import GPT
from tests.unit.test_bundle import make_lm_bundle, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = ["the cat", "a", "once upon a time there was a small robot", "the dog ran", "good"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return load_bundle(make_lm_bundle(tmp_path_factory.mktemp("lm"), seed=4))


@pytest.fixture(scope="module")
def rope_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    root = tmp_path_factory.mktemp("rope")
    tok, eos, pad = tiny_tokenizer(root / "tok" / "tokenizer.json")
    torch.manual_seed(5)
    model = GPT(
        ModelConfig(
            vocab_size=320, block_size=32, n_layer=2, n_head=2, n_embd=16, pos_embedding="rope"
        )
    )
    return load_bundle(save_lm_bundle(root / "lm", model, tok, eos, pad))


def greedy(**changes) -> GenerationParams:
    return GenerationParams(temperature=0.0, **changes)


# ----------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": -3}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": [""]}, "stop"),
        ({"stop": [3]}, "stop"),
        ({"seed": -2}, "seed"),
        ({"seed": True}, "seed"),
        ({"beams": 4}, "beams"),
    ],
)
def test_bad_params_are_one_line_errors_naming_the_param(changes: dict, name: str) -> None:
    with pytest.raises(LmopsError) as info:
        GenerationParams().replace(**changes)
    message = str(info.value)
    assert "\n" not in message and name in message


def test_off_values_and_the_schema_spelling() -> None:
    p = GenerationParams(top_k=0, top_p=1.0, stop="\n")
    assert (p.top_k, p.top_p, p.stop) == (None, None, ("\n",))
    schema = GenerationParams(max_new_tokens=7).to_schema()
    assert schema == {
        "max_new_tokens": 7,
        "temperature": 0.8,
        "top_k": 0,
        "top_p": 1.0,
        "stop": [],
        "seed": -1,
    }
    back = GenerationParams.from_schema(schema, GenerationParams())
    assert back == GenerationParams(max_new_tokens=7)
    import numpy as np  # what MLflow hands a pyfunc: numpy values

    request = {"top_k": np.int64(5), "stop": np.array(["##", "\n"]), "seed": np.int64(3)}
    got = GenerationParams.from_schema(request, back)
    assert (got.top_k, got.stop, got.seed, got.max_new_tokens) == (5, ("##", "\n"), 3, 7)


def test_sample_next_filters() -> None:
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0], [5.0, 0.0, 0.0, 0.0]])
    assert sample_next(logits, greedy()).tolist() == [1, 0]
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    for _ in range(20):  # top-k 1 and a tiny top-p keep only the argmax
        assert sample_next(logits, GenerationParams(temperature=5.0, top_k=1)).tolist() == [1, 0]
        tiny_p = GenerationParams(temperature=5.0, top_p=1e-6)
        assert sample_next(logits, tiny_p, gens).tolist() == [1, 0]
    # top-p 0.5 on row 0 keeps tokens 1 and 2 only (0.51 < 0.5 + mass of token 1 alone)
    seen = {
        int(sample_next(logits, GenerationParams(temperature=1.0, top_p=0.6))[0])
        for _ in range(200)
    }
    assert seen == {1, 2}


# ----------------------------------------------------------------- sampling through a bundle


def test_seeded_sampling_repeats_and_leaves_the_global_rng_alone(bundle: Bundle) -> None:
    params = GenerationParams(max_new_tokens=10, temperature=1.0, seed=11)
    state = torch.get_rng_state()
    a = generate_text(bundle, "the cat", params)
    assert torch.equal(torch.get_rng_state(), state)
    assert generate_text(bundle, "the cat", params) == a
    others = {generate_text(bundle, "the cat", params, seed=s)[1] for s in range(5)}
    assert len(others) > 1  # the seed matters


@pytest.mark.parametrize("flt", [{"top_k": 1}, {"top_p": 1e-6}])
def test_top_k_one_and_tiny_top_p_equal_greedy(bundle: Bundle, flt: dict) -> None:
    expected = generate_batch(bundle, PROMPTS, greedy(max_new_tokens=8))
    sampled = GenerationParams(max_new_tokens=8, temperature=1.3, seed=2, **flt)
    assert generate_batch(bundle, PROMPTS, sampled) == expected
    unseeded = sampled.replace(seed=None)
    assert generate_batch(bundle, PROMPTS, unseeded) == expected


# ----------------------------------------------------------------- batches of mixed lengths


def alone(b: Bundle, prompts: list[str], params: GenerationParams) -> list[tuple[str, str]]:
    out = []
    for i, p in enumerate(prompts):
        seed = None if params.seed is None else params.seed + i
        out.append(generate_text(b, p, params.replace(seed=seed)))
    return out


@pytest.mark.parametrize("which", ["bundle", "rope_bundle"])
@pytest.mark.parametrize("new_tokens", [6, 30])  # 30: the padded batch outgrows block_size 32
def test_a_mixed_length_batch_equals_each_prompt_alone(
    request: pytest.FixtureRequest, which: str, new_tokens: int
) -> None:
    b = request.getfixturevalue(which)
    lengths = {len(_prompt_ids(b, p)) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS)  # every row of the batch is padded differently
    params = greedy(max_new_tokens=new_tokens)
    assert generate_batch(b, PROMPTS, params, batch_size=len(PROMPTS)) == alone(b, PROMPTS, params)
    # seeded sampling too: prompt i draws from seed + i whatever shares its batch
    sampled = GenerationParams(max_new_tokens=new_tokens, temperature=1.0, top_k=20, seed=9)
    assert generate_batch(b, PROMPTS, sampled, batch_size=2) == alone(b, PROMPTS, sampled)


@pytest.mark.parametrize("which", ["bundle", "rope_bundle"])
def test_left_padded_logits_match_each_row_alone(
    request: pytest.FixtureRequest, which: str
) -> None:
    model = request.getfixturevalue(which).model
    rows = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    decoder = BatchDecoder(model, rows, greedy(max_new_tokens=4), pad_id=0)
    # run the prefill and three cached steps, comparing every step's last logits
    for _ in range(4):
        left_pad = decoder.pad if bool(decoder.pad.any()) else None
        hidden = model._trunk(decoder.pending, decoder.caches, left_pad=left_pad)
        batch_logits = model.lm_head(hidden[:, -1])
        for r in range(len(rows)):
            real = decoder.tokens[r, int(decoder.pad[r]) :][None]
            solo = model(real)[0][0, -1]
            torch.testing.assert_close(batch_logits[r], solo, atol=1e-5, rtol=1e-5)
        # what step() does next, with the greedy token of each row
        token = batch_logits.argmax(-1)
        decoder.tokens = torch.cat((decoder.tokens, token[:, None]), dim=1)
        decoder.pending = token[:, None]


def test_cached_equals_uncached_for_a_mixed_batch(bundle: Bundle) -> None:
    params = greedy(max_new_tokens=30)
    cached = generate_batch(bundle, PROMPTS, params)
    assert generate_batch(bundle, PROMPTS, params, use_cache=False) == cached


def test_answer_greedy_gives_what_the_earlier_length_grouped_path_gave(bundle: Bundle) -> None:
    """The path evaluation used before generation was batched with padding, verbatim."""
    prompts = [*PROMPTS, "the cat", "a dog", "once"] * 2
    encoded = [_prompt_ids(bundle, p) for p in prompts]
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_length.setdefault(len(ids), []).append(i)
    expected = [""] * len(prompts)
    for rows in by_length.values():
        for start in range(0, len(rows), 3):
            chunk = rows[start : start + 3]
            idx = torch.tensor([encoded[i] for i in chunk], dtype=torch.long)
            out = bundle.model.generate(idx, 9, temperature=0.0, eos_id=bundle.eos_id)
            for row, i in enumerate(chunk):
                expected[i] = _decode(bundle, encoded[i], out[row, idx.size(1) :].tolist())[1]
    assert answer_greedy(bundle, prompts, max_new_tokens=9, batch_size=3) == expected


# ----------------------------------------------------------------- stop strings, long prompts


def test_stop_strings_cut_the_text_and_end_the_row(bundle: Bundle) -> None:
    full = generate_batch(bundle, PROMPTS, greedy(max_new_tokens=16))
    tail = full[0][1]
    stop = tail[5:8]
    assert len(stop) == 3 and stop.strip()
    cut = tail[: tail.find(stop)]
    got = generate_batch(bundle, PROMPTS, greedy(max_new_tokens=16, stop=(stop, "never seen")))
    assert got[0] == (full[0][0], cut)
    for (head, t), (h2, t2) in zip(full[1:], got[1:], strict=True):  # the other rows: cut too
        assert h2 == head and t2 == (t[: t.find(stop)] if stop in t else t)


def test_a_prompt_longer_than_the_context_is_cut_from_the_left_with_a_warning(
    bundle: Bundle, caplog: pytest.LogCaptureFixture
) -> None:
    long_prompt = " ".join(["the cat sat on the mat"] * 12)
    ids = _prompt_ids(bundle, long_prompt)
    block = bundle.model.config.block_size
    assert len(ids) > block
    with caplog.at_level(logging.WARNING, logger="lmops.export.bundle"):
        head, tail = generate_text(bundle, long_prompt, greedy(max_new_tokens=5))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"last {block} tokens" in warnings[0] and str(len(ids)) in warnings[0]
    kept = ids[-block:]
    assert head == bundle.tokenizer.decode(kept)
    out = bundle.model.generate(torch.tensor([kept]), 5, temperature=0.0, eos_id=bundle.eos_id)
    assert tail == _decode(bundle, kept, out[0, block:].tolist())[1]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmops.export.bundle"):
        generate_text(bundle, "the cat", greedy(max_new_tokens=2))
    assert not caplog.records  # a prompt that fits: no warning


# ----------------------------------------------------------------- streaming


def test_streamed_pieces_add_up_to_the_text(bundle: Bundle) -> None:
    for params in (greedy(max_new_tokens=20), GenerationParams(max_new_tokens=20, seed=1)):
        pieces: list[str] = []
        prompt_seen: list[str] = []
        head, tail = generate_text(bundle, "the cat", params, on_text=pieces.append)
        assert "".join(pieces) == tail and len(pieces) > 1  # as they come, not at the end
        got = generate_batch(
            bundle,
            ["the cat"],
            params,
            on_prompt=lambda _i, t, seen=prompt_seen: seen.append(t),
            on_text=lambda _i, t: None,
        )
        assert prompt_seen == [head] and got == [(head, tail)]


def test_text_stream_never_splits_a_character_and_holds_back_stop_prefixes(
    tmp_path: Path,
) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tiny_tokenizer(tmp_path / "tok.json")[0]))
    text = "naïve café 🙂 tea, ünïcode ok"
    ids = tok.encode(text).ids
    assert len(ids) > len(text.split())  # multi-byte characters span several tokens

    def decode(x: list[int]) -> str:
        return tok.decode(x)

    stream = TextStream(decode, [], ())
    pieces = [stream.push(i) for i in ids]
    pieces.append(stream.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)

    stream = TextStream(decode, tok.encode("Q:").ids, ("🙂 t",))
    shown = "".join(stream.push(i) for i in ids) + stream.flush()
    assert shown == "naïve café " and stream.stopped


def test_text_stream_holds_back_what_may_start_a_stop_string() -> None:
    chars = list("ab#c##d")
    stream = TextStream(lambda ids: "".join(chars[i] for i in ids), [], ("##",))
    out = [stream.push(i) for i in range(len(chars))]
    # '#' after 'b' is held until 'c' shows it was not a stop; the second '#' pair stops
    assert out == ["a", "b", "", "#c", "", "", ""]
    assert stream.stopped and stream.text == "ab#c" and stream.flush() == ""
