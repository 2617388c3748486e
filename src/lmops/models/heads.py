"""Task heads on top of the GPT backbone."""

from __future__ import annotations

import torch
import torch.nn as nn

from lmops.models.gpt import GPT

__all__ = ["SequenceClassifier"]


class SequenceClassifier(nn.Module):
    """Classify a sequence from the hidden state of its last real token.

    In a causal decoder only the last position has attended to the whole text, so that is the
    summary we pool. Inputs are right-padded; ``lengths`` says where each row's text ends, and
    because attention is causal the padding after it cannot change that position's state.
    State-dict keys: ``backbone.*`` (the GPT's own keys) and ``head.*``.
    """

    def __init__(self, backbone: GPT, num_labels: int, dropout: float = 0.0) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels must be >= 2, got {num_labels}")
        self.backbone = backbone
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.n_embd, num_labels)
        nn.init.normal_(self.head.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.head.bias)

    def pool(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden state [B, C] at index ``lengths - 1`` of each row."""
        hidden = self.backbone.hidden_states(input_ids)  # [B, T, C]
        # clamp: an empty row (length 0) reads position 0 instead of wrapping around to -1
        last = (lengths.to(hidden.device).long() - 1).clamp(min=0)
        rows = torch.arange(hidden.size(0), device=hidden.device)
        return hidden[rows, last]

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_labels] for right-padded ``input_ids`` [B, T] with true ``lengths`` [B]."""
        return self.head(self.dropout(self.pool(input_ids, lengths)))
