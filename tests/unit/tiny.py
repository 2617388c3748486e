"""Settings shared by the unit tests that train tiny models on the CPU."""

from __future__ import annotations

from lmops.config import HardwareConfig

# one CPU process, no progress bar: what every tiny Trainer in the unit tests runs on
HW = HardwareConfig(accelerator="cpu", devices="1", progress_bar=False)
