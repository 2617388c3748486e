"""lmops: raw text to a registered, served GPT-style language model, one DVC stage at a time."""

__version__ = "0.1.0"
