"""The optional features and the pyproject extras that install them (`pip install
"pixel-lightning[stream]"`), so that using a feature whose extra is missing is one paragraph that
names the install command, not an ImportError."""

from __future__ import annotations

import importlib.util
import re

_SWEEP = ("sweep", "The Optuna sweeper (hparams_search=optuna, hydra/sweeper=optuna)")
_SLURM = ("slurm", "The submitit launchers (hydra/launcher=slurm, submitit_local, submitit_slurm)")

#: A module that only an extra installs -> (that extra, the features that need the module).
EXTRAS = {
    "litdata": ("stream", "Streamed data (data.streaming=true, data=imagenet32 or imagenet64, pixel-prepare)"),
    "hydra_plugins.hydra_optuna_sweeper": _SWEEP,
    "optuna": _SWEEP,
    "hydra_plugins.hydra_submitit_launcher": _SLURM,
    "submitit": _SLURM,
    "tensorboard": ("tensorboard", "logger=tensorboard"),
    "mlflow": ("mlflow", "logger=mlflow"),
    "huggingface_hub": ("hub", "Loading a model by its Hugging Face Hub repo id"),
}

#: Command-line choices of config groups that a Hydra plugin provides, with the plugin's module. Hydra
#: reports a missing plugin's config as a missing config file, before any job runs, so the commands
#: check these first (commands/__init__.py).
PLUGIN_CHOICES = {
    ("hparams_search", "optuna"): "hydra_plugins.hydra_optuna_sweeper",
    ("hydra/sweeper", "optuna"): "hydra_plugins.hydra_optuna_sweeper",
    ("hydra/launcher", "slurm"): "hydra_plugins.hydra_submitit_launcher",
    ("hydra/launcher", "submitit_local"): "hydra_plugins.hydra_submitit_launcher",
    ("hydra/launcher", "submitit_slurm"): "hydra_plugins.hydra_submitit_launcher",
}


def install_hint(module: str) -> str:
    """The paragraph for the missing `module` of an extra."""
    extra, feature = EXTRAS[module]
    return (
        f"{feature} needs the optional '{extra}' dependencies, which are not installed (no module {module}). "
        f'Install them with: pip install "pixel-lightning[{extra}]" (in a clone of the repository: '
        f'pip install -e ".[{extra}]").'
    )


def missing_extra(err: BaseException) -> str | None:
    """The install hint if `err` is a missing module of an extra, else None. Lightning's loggers name the
    missing package in the message only, so the words of the message are checked too."""
    if not isinstance(err, ModuleNotFoundError):
        return None
    for name in [err.name] if err.name else re.findall(r"[\w.]+", str(err)):
        for module in EXTRAS:
            if name == module or name.startswith(module + "."):
                return install_hint(module)
    return None


def missing_plugin(overrides: list[str]) -> str | None:
    """The install hint if a command-line override chooses a config of a Hydra plugin that is not installed."""
    for override in overrides:
        group, _, option = override.lstrip("+~").partition("=")
        module = PLUGIN_CHOICES.get((group, option))
        if module is not None and not is_installed(module):
            return install_hint(module)
    return None


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (hydra_plugins) is missing too
        return False
