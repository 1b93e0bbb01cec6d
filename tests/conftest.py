"""Shared set-up. Caches of wandb and torch go to a temporary folder made before any test module
imports them and removed when the session ends (never the home folder); global state set by one
test does not leak into the next."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from hydra.core.hydra_config import HydraConfig
from lightning_utilities.core.rank_zero import rank_zero_only  # Lightning's and Fabric's too (one object)

CACHES = {
    "WANDB_DIR": "wandb",
    "WANDB_CACHE_DIR": "wandb-cache",
    "WANDB_CONFIG_DIR": "wandb-config",
    "WANDB_DATA_DIR": "wandb-data",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
    "PIXEL_CACHE_DIR": "pixel-lightning",  # the FID classifier, trained once per session
}
#: Environment variables that library calls under test set for the whole process.
PROCESS_STATE = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")
_cache_root: str | None = None


def pytest_configure(config):
    """Before collection, so that torch and wandb see the folders when they are first imported."""
    global _cache_root
    _cache_root = tempfile.mkdtemp(prefix="pixel-lightning-tests-")
    for variable, folder in CACHES.items():
        os.environ.setdefault(variable, os.path.join(_cache_root, folder))
    os.environ.setdefault("WANDB_SILENT", "true")


def pytest_unconfigure(config):
    if _cache_root:
        shutil.rmtree(_cache_root, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_leaked_global_state():
    """seed_everything's environment variables, the HydraConfig singleton and Lightning's process rank are
    as before each test: a Trainer built with a cluster's ranks (the SLURM test) sets the rank for the whole
    process, and every rank-zero-only call after it (a logger's writes) would do nothing."""
    before = {variable: os.environ.get(variable) for variable in PROCESS_STATE}
    rank = getattr(rank_zero_only, "rank", 0)  # Lightning sets it on import (0 outside a cluster)
    yield
    if hasattr(rank_zero_only, "rank"):
        rank_zero_only.rank = rank
    for variable, value in before.items():
        if value is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = value
    HydraConfig.instance().cfg = None
