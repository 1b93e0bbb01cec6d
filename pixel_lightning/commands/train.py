"""pixel-train (and `python train.py`): train a model (autoregressive, or the DCGAN baseline), e.g.
`pixel-train model=row_lstm data=cifar10 ...`."""

import hydra
from omegaconf import DictConfig

from pixel_lightning.cli import run_job
from pixel_lightning.commands import config_dir, run_hydra
from pixel_lightning.train import optimized_value, train


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    return optimized_value(cfg, run_job(train, cfg))


def run() -> None:
    run_hydra(main)
