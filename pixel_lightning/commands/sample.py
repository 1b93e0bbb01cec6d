"""pixel-sample (and `python sample.py`): sample from a trained model, e.g.
`pixel-sample ckpt_path=<file.ckpt> num_samples=16`."""

import hydra
from omegaconf import DictConfig

from pixel_lightning.cli import run_job
from pixel_lightning.commands import config_dir, run_hydra
from pixel_lightning.sample import sample


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="sample")
def main(cfg: DictConfig) -> None:
    run_job(sample, cfg)


def run() -> None:
    run_hydra(main)
