"""The run record file: what one training (or eval.py) run measured, as `<run>/record.json`.

The RunRecord callback (callbacks/run_record.py) measures and writes it; compare.py reads every
record under a folder into the comparison table. Plain file work, no Lightning: the command-line
error path and the comparison use it without loading the training stack.

Fields (RECORD_FIELDS; null when not measured):
  model, dataset      the Hydra choices (`model=`, `data=`)
  task                train or eval;  status: running, finished, failed or interrupted (by SIGTERM or
                      SIGINT; error: the one line of either)
  params              parameter count
  epochs, steps       passes over the training set (images trained on, by every process, / training-set size)
                      and optimizer steps done
  train_time_s        wall time from the start of training to the end of its last batch (with
                      validation, sample grids and learning-curve points in between; without the
                      final grid and test)
  train_images_per_s  images (of every process) / time spent in training batches only (forward, backward, step):
                      no validation, sampling or checkpointing
                      These four count the whole training, over every session of a resumed run
                      (null when an earlier session's are unknown: its checkpoint predates them);
  session_epochs, session_steps, session_train_time_s, session_train_images_per_s
                      the same, of this session alone (equal to them for a run never resumed)
  test_nll, test_bpd  test NLL in nats per image and bits per dimension (the best checkpoint's)
  condition           null, or "class" for a class-conditional model: test_nll and test_bpd are
                      then of log p(x | y), not comparable with the unconditional log p(x)
  sample_time_per_image_s, fid, fid_label, classifier_score, kid, kid_std, classes_covered
                      from the `fid` node (evaluation/fid.py), on the same weights as the test:
                      FID, KID (mean and std over subsets), the classifier's Inception Score and
                      the classes its argmax gives at least half their fair share of the samples
  label_accuracy      (conditional models) the fraction of samples the classifier assigns to the
                      label they were drawn for
  peak_memory_mb, peak_memory_kind
                      cuda_max_allocated, or cpu_max_rss_growth (growth of the process's max RSS)
  device, precision, seed, git_commit, sample_grid (path of the last sample grid, relative to
                      the run folder: the scored samples when `quality` drew some),
  overrides (the job's command-line overrides), wandb (project, group and mode of its W&B run)
  curve               the learning curve (callbacks/learning_curve.py): a list of points
                      {time_s, images, steps, bpd, bpd_se, kid, kid_std}, time_s on the training
                      clock (without the measurements), bpd on a fixed validation subset (kid for
                      a model without a likelihood)

Nothing read from a record is trusted: check_record says what is wrong with one (compare.py
skips it with that reason).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pixel_lightning.files import atomic_write

RECORD_FIELDS = (
    "model",
    "dataset",
    "task",
    "status",
    "error",
    "params",
    "epochs",
    "steps",
    "train_time_s",
    "train_images_per_s",
    "session_epochs",
    "session_steps",
    "session_train_time_s",
    "session_train_images_per_s",
    "condition",
    "test_nll",
    "test_bpd",
    "sample_time_per_image_s",
    "fid",
    "fid_label",
    "classifier_score",
    "label_accuracy",
    "peak_memory_mb",
    "peak_memory_kind",
    "device",
    "precision",
    "seed",
    "git_commit",
    "sample_grid",
    "overrides",
    "wandb",
    "kid",
    "kid_std",
    "classes_covered",
    "curve",
)
NUMBER_FIELDS = (
    "params",
    "epochs",
    "steps",
    "train_time_s",
    "train_images_per_s",
    "session_epochs",
    "session_steps",
    "session_train_time_s",
    "session_train_images_per_s",
    "test_nll",
    "test_bpd",
    "sample_time_per_image_s",
    "fid",
    "classifier_score",
    "label_accuracy",
    "peak_memory_mb",
    "seed",
    "kid",
    "kid_std",
    "classes_covered",
)
TEXT_FIELDS = (
    "model",
    "dataset",
    "task",
    "status",
    "error",
    "condition",
    "fid_label",
    "peak_memory_kind",
    "device",
    "precision",
    "git_commit",
    "sample_grid",
)
REQUIRED_FIELDS = ("model", "dataset", "status")
STATUSES = ("running", "finished", "failed", "interrupted")
CURVE_FIELDS = ("time_s", "images", "steps", "bpd", "bpd_se", "kid", "kid_std")
LARGEST = 1e15  # no measured quantity comes near: a larger number is a broken file, and would break the plots
RECORD_NAME = "record.json"


def blank_record(**known: Any) -> dict[str, Any]:
    unknown = set(known) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"not record fields: {sorted(unknown)}")
    return {field: known.get(field) for field in RECORD_FIELDS}


def write_record(output_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write `<output_dir>/record.json` atomically and durably (a crash never leaves half a record),
    as strict JSON: a number that is not finite (NaN, inf: no JSON number) is written null, not measured."""
    path = Path(output_dir) / RECORD_NAME
    with atomic_write(path, "the run record") as f:
        f.write((json.dumps(finite_or_null(record), indent=2, allow_nan=False) + "\n").encode())
    return path


def finite_or_null(value: Any) -> Any:
    """`value` with every float that is not finite, however deep in its dicts and lists, as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value


def read_record(path: str | Path) -> dict[str, Any]:
    return blank_record() | json.loads(Path(path).read_text())


def check_record(data: Any) -> dict[str, Any]:
    """The record in `data` (parsed JSON) with every field (missing optional ones null), or a
    ValueError saying what is wrong: not an object, a required field missing, a value of the wrong
    kind, or a number that is not finite or beyond LARGEST."""
    if not isinstance(data, dict):
        raise ValueError(f"a JSON {type(data).__name__} where an object belongs")
    missing = [field for field in REQUIRED_FIELDS if data.get(field) is None]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    if data["status"] not in STATUSES:
        raise ValueError(f"status {str(data['status'])[:40]!r} is none of {', '.join(STATUSES)}")
    record = blank_record() | {key: value for key, value in data.items() if key in RECORD_FIELDS}
    for field in NUMBER_FIELDS:
        check_number(field, record[field])
    for field in TEXT_FIELDS:
        if record[field] is not None and not isinstance(record[field], str):
            raise ValueError(f"{field} is a {type(record[field]).__name__}, not text")
    overrides = record["overrides"]
    if overrides is not None and not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
        raise ValueError("overrides is not a list of text")
    wandb = record["wandb"]
    if wandb is not None and not (isinstance(wandb, dict) and all(isinstance(v, str | None) for v in wandb.values())):
        raise ValueError("wandb is not an object of text values")
    if record["curve"] is not None:
        record["curve"] = check_curve(record["curve"])
    return record


def check_curve(curve: Any) -> list[dict[str, Any]]:
    """The learning-curve points in `curve` (a record's, or a checkpoint's), each with every
    CURVE_FIELDS field, or a ValueError saying what is wrong: not a list of objects, a number that
    is not one (or not finite, or beyond LARGEST), no time_s or images."""
    if not isinstance(curve, list) or not all(isinstance(point, dict) for point in curve):
        raise ValueError("curve is not a list of objects")
    for i, point in enumerate(curve):
        for field in CURVE_FIELDS:
            check_number(f"curve[{i}].{field}", point.get(field))
        if point.get("time_s") is None or point.get("images") is None:
            raise ValueError(f"curve[{i}] has no time_s or images")
    return [{field: point.get(field) for field in CURVE_FIELDS} for point in curve]


def check_number(name: str, value: Any) -> None:
    """A ValueError unless `value` is None or a number (not a bool), finite and within +-LARGEST."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} is a {type(value).__name__}, not a number")
    try:
        if not math.isfinite(float(value)) or abs(value) > LARGEST:
            raise ValueError(f"{name} is {str(value)[:20]}, not a finite number below {LARGEST:g}")
    except OverflowError:
        raise ValueError(f"{name} has {len(str(value))} digits, far beyond {LARGEST:g}") from None


def git_commit() -> str | None:
    """The commit of the code that ran (with '-dirty' if it had uncommitted changes), if known."""
    repo = Path(__file__).resolve().parents[1]

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=False)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def quality_line(record: dict[str, Any]) -> str:
    """The sampling time and sample-quality scores of a record, as printed after a run."""
    if record["fid"] is None:
        return "Sample quality: not measured (fid.num_samples=0)"
    classifier = record["fid_label"].split("(")[1].split(",")[0]
    accuracy = "" if record["label_accuracy"] is None else f"; label accuracy: {100 * record['label_accuracy']:.1f}%"
    return (
        f"Sampling: {record['sample_time_per_image_s']:.4g} s/image; {record['fid_label']}: {record['fid']:.2f}; "
        f"IS ({classifier}): {record['classifier_score']:.2f}{accuracy}"
    )


def record_failure(cfg: DictConfig, output_dir: str | Path, error: str, status: str = "failed") -> Path | None:
    """After a failed (or an interrupted) job: mark its record (written so far, or a new one with
    what the config says) with `status` and the error's one-line message. Only for jobs that
    record (train, eval)."""
    spec = OmegaConf.select(cfg, "callbacks.run_record", throw_on_resolution_failure=False)
    if not spec:
        return None
    path = Path(output_dir) / RECORD_NAME
    record = read_record(path) if path.is_file() else blank_record()
    for field, key in (
        ("model", "model_name"),
        ("dataset", "dataset"),
        ("task", "task"),
        ("seed", "seed"),
        ("overrides", "overrides"),
    ):
        if record[field] is None:  # the config may be what failed: take what resolves
            value = OmegaConf.select(spec, key, throw_on_resolution_failure=False)
            record[field] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    record.update(status=status, error=" ".join(error.split()) or "unknown error")
    return write_record(output_dir, record)
