"""Evaluate a checkpoint: `python eval.py ckpt_path=<file.ckpt>` prints its test NLL, bits/dim,
sampling time and FID, and writes them as <run>/record.json."""

import hydra
from omegaconf import DictConfig

import pixel_lightning  # noqa: F401  (registers the config resolvers)
from pixel_lightning.cli import exit_if_jobs_failed, run_job
from pixel_lightning.eval import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_job(evaluate, cfg)


if __name__ == "__main__":
    main()
    exit_if_jobs_failed()
