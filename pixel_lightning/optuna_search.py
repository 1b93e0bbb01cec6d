"""The Optuna study of `hparams_search=optuna` (conf/hparams_search/optuna.yaml): each model's own
search space, and a study that goes on, across runs, where it stopped.

- `model_space`, the sweeper's `custom_search_space`: a trial searches the space of its model,
  `search_spaces.<model>` (in hydra.sweeper.params' syntax), since the models do not share their
  settings (PixelCNN++ has `model.net.filters`, not `hidden`; the DCGAN its own optimiser).
- `OptunaStudy`, a Hydra callback, before the sweeper starts: every searched setting must exist in
  the model's config (else one paragraph: Hydra would fail at trial 0, outside any job, and end the
  study); the storage must open (else one paragraph, not a traceback); and a study resumed from
  storage gets its sampler seed offset by the number of trials it holds, so that it draws new
  parameters instead of repeating the first run's.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

log = logging.getLogger(__name__)


def model_space(config: DictConfig, trial: Any) -> None:
    """Suggest to `trial` the search space of its model (the trial's `model` parameter where the
    study searches over models, else the sweep's model), leaving out the settings that
    hydra.sweeper.params or the command line already search or fix."""
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    model = trial.params.get("model", trial.user_attrs.get("model", config.hydra.runtime.choices.model))
    space = OmegaConf.select(config, f"search_spaces.{model}")
    if space is None:
        log.warning(
            "No search space for model=%s (search_spaces.%s): the trial searches only hydra.sweeper.params.",
            model,
            model,
        )
        return
    distributions, fixed = create_params_from_overrides([f"{key}={value}" for key, value in space.items()])
    for name, distribution in distributions.items():
        if name not in trial.params and name not in trial.user_attrs:
            trial._suggest(name, distribution)  # what the sweeper itself does with hydra.sweeper.params
    for name, value in fixed.items():
        trial.set_user_attr(name, value)


def searched_settings(config: DictConfig) -> list[str]:
    """The settings a trial of the sweep's model sets: its search space, hydra.sweeper.params and
    the command line's sweeps (model.net.hidden=16,32). Settings that add a key (+key=...) and config
    groups (data=..., hydra/sweeper/sampler=...) are left out: Hydra checks those itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    model = config.hydra.runtime.choices.get("model")
    space = OmegaConf.select(config, f"search_spaces.{model}") or {}
    sweeps = [
        override.get_key_element()
        for override in OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        if override.is_sweep_override() and not override.is_add() and not override.is_force_add()
    ]
    return [
        key
        for key in dict.fromkeys([*space, *(config.hydra.sweeper.params or {}), *sweeps])
        if "/" not in key and not key.startswith("+") and key not in config.hydra.runtime.choices
    ]


class OptunaStudy(Callback):
    """Hydra callback of hparams_search=optuna: checks the searched settings and the storage, and
    offsets a resumed study's sampler seed, before the sweeper is made (see the module's doc)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        model = config.hydra.runtime.choices.get("model")
        missing = [
            key for key in searched_settings(config) if OmegaConf.select(config, key, default=KeyError) is KeyError
        ]
        if missing:
            _exit(
                f"The Optuna search sets {', '.join(missing)}, which model={model} does not have, so every trial "
                f"would fail. Search this model's own settings: give it a space (search_spaces.{model} in "
                "conf/hparams_search/optuna.yaml) or drop those keys from hydra.sweeper.params."
            )
        trials = stored_trials(sweeper.storage, sweeper.study_name)
        seed = OmegaConf.select(config, "hydra.sweeper.sampler.seed")
        if trials and seed is not None:
            with read_write(config.hydra):  # read-only once HydraConfig holds it; the sweeper is made from it next
                config.hydra.sweeper.sampler.seed = seed + trials
            log.info(
                "Study %s holds %d trials: sampler seed %d + %d, so that it draws new parameters",
                sweeper.study_name,
                trials,
                seed,
                trials,
            )


def stored_trials(storage: str | None, study_name: str | None) -> int:
    """How many trials the study `study_name` already holds in `storage` (0 for a new study, an
    in-memory storage or a generated name); an unusable storage ends the command in one paragraph."""
    if storage is None:
        return 0
    import optuna
    import sqlalchemy.exc

    try:
        summaries = optuna.study.get_all_study_summaries(storage)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError, OSError, RuntimeError) as err:
        cause = " ".join(str(err).split("\n(Background")[0].split())
        _exit(
            f"Could not open the Optuna storage hydra.sweeper.storage={storage}: {type(err).__name__}: {cause}. Give "
            "a database URL that can be opened and written, e.g. sqlite:///<a writable folder>/optuna.db (other "
            "databases need their driver installed), or hydra.sweeper.storage=null to keep the study in memory."
        )
    return next((summary.n_trials for summary in summaries if summary.study_name == study_name), 0)


def _exit(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
