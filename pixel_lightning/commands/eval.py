"""pixel-eval (and `python eval.py`): evaluate a checkpoint, `pixel-eval ckpt_path=<file.ckpt>`: its
test NLL, bits/dim, sampling time and FID, printed and written as <run>/record.json."""

import hydra
from omegaconf import DictConfig

from pixel_lightning.cli import run_job
from pixel_lightning.commands import config_dir, run_hydra
from pixel_lightning.eval import evaluate


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> None:
    run_job(evaluate, cfg)


def run() -> None:
    run_hydra(main)
