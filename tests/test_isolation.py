"""Tests hold anywhere: global state one test sets is gone in the next (these two run in file order)."""

import os

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


def test_one_test_sets_process_state():
    pl.seed_everything(7, workers=True)
    HydraConfig.instance().cfg = OmegaConf.create({"runtime": {"output_dir": "/elsewhere"}})
    assert os.environ["PL_GLOBAL_SEED"] == "7" and HydraConfig.initialized()


def test_the_next_test_does_not_see_it():
    assert "PL_GLOBAL_SEED" not in os.environ and "PL_SEED_WORKERS" not in os.environ
    assert not HydraConfig.initialized()
