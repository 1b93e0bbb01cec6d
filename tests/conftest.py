"""Shared fixtures. Caches of wandb and torch go to a temporary folder, never the home folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CACHE = Path(tempfile.mkdtemp(prefix="pixel-lightning-tests-"))
for _var, _sub in {
    "WANDB_DIR": "wandb",
    "WANDB_CACHE_DIR": "wandb-cache",
    "WANDB_CONFIG_DIR": "wandb-config",
    "WANDB_DATA_DIR": "wandb-data",
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
    "PIXEL_CACHE_DIR": "pixel-lightning",  # the FID classifier, trained once per session
}.items():
    os.environ.setdefault(_var, str(_CACHE / _sub))
os.environ.setdefault("WANDB_SILENT", "true")
