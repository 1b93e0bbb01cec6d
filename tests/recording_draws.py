"""Run an entry point with every draw's inputs recorded, for comparing sampling paths across a subprocess:

    python tests/recording_draws.py sample.py <overrides>

Each job saves, in its output folder, `draws.pt`: the (channel, outputs) fed to each of its draws in
order (support.sample_recording_draws, in-process, does the same for one model).
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig

from pixel_lightning.models.distribution import AutoregressiveDistribution

fed: dict[str, list[tuple[int, torch.Tensor]]] = {}  # job output folder -> its draws
draw_levels = AutoregressiveDistribution._draw


def recording(self, logits: torch.Tensor, ch: int, *rest) -> torch.Tensor:
    fed.setdefault(HydraConfig.get().runtime.output_dir, []).append((ch, logits.clone()))
    return draw_levels(self, logits, ch, *rest)


@atexit.register
def save() -> None:
    for folder, draws in fed.items():
        torch.save(draws, Path(folder) / "draws.pt")


AutoregressiveDistribution._draw = recording
script = sys.argv.pop(1)
sys.argv[0] = script
runpy.run_path(script, run_name="__main__")
