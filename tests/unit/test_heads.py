"""SequenceClassifier: last-real-token pooling, padding invariance, state-dict layout."""

from __future__ import annotations

import pytest
import torch

from lmops.config import ModelConfig
from lmops.models.gpt import GPT
from lmops.models.heads import SequenceClassifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def classifier() -> SequenceClassifier:
    torch.manual_seed(0)
    backbone = GPT(ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    return SequenceClassifier(backbone, num_labels=3, dropout=0.1).eval()


def test_padding_after_the_text_does_not_change_logits(classifier: SequenceClassifier) -> None:
    text = torch.randint(1, 64, (5,))
    short = text[None, :]  # no padding at all
    padded_zeros = torch.cat([text, torch.zeros(6, dtype=torch.long)])[None, :]
    padded_noise = torch.cat([text, torch.randint(0, 64, (11,))])[None, :]
    lengths = torch.tensor([5])
    expected = classifier(short, lengths)
    torch.testing.assert_close(classifier(padded_zeros, lengths), expected)
    torch.testing.assert_close(classifier(padded_noise, lengths), expected)


def test_pools_the_last_real_token_of_each_row(classifier: SequenceClassifier) -> None:
    ids = torch.randint(1, 64, (3, 10))
    lengths = torch.tensor([10, 4, 7])
    hidden = classifier.backbone.hidden_states(ids)
    expected = torch.stack([hidden[0, 9], hidden[1, 3], hidden[2, 6]])
    torch.testing.assert_close(classifier.pool(ids, lengths), expected)
    # the batch result equals each row run alone at its own length
    batch = classifier(ids, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(batch[i], classifier(ids[i : i + 1, :n], lengths[i : i + 1])[0])
    # and a different length reads a different token
    assert not torch.allclose(classifier(ids, torch.tensor([9, 4, 7]))[0], batch[0])


def test_output_shape_state_dict_and_gradients(classifier: SequenceClassifier) -> None:
    ids = torch.randint(0, 64, (4, 8))
    logits = classifier.train()(ids, torch.tensor([8, 3, 5, 1]))
    assert logits.shape == (4, 3)
    logits.sum().backward()
    assert classifier.head.weight.grad is not None
    assert classifier.backbone.transformer.wte.weight.grad is not None
    keys = set(classifier.state_dict())
    assert {"head.weight", "head.bias", "backbone.transformer.wte.weight"} <= keys
    assert all(k.startswith(("backbone.", "head.")) for k in keys)


def test_rejects_fewer_than_two_labels() -> None:
    backbone = GPT(ModelConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=16))
    with pytest.raises(ValueError):
        SequenceClassifier(backbone, num_labels=1)
