"""What `run.py attributes` does once its flags are checked: opens the runs, checks that
they fit together, edits and writes `OUT/attributes.json` and the grids (nothing in
the runs' own directories is written)."""

import os
from typing import Sequence

import numpy as np
from absl import logging

from cnnjax.editing.attribute_runs import attribute_edit, class_analogy, dataset_family
from cnnjax.errors import ConfigError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.workdir import write_json_atomic
from cnnjax.runs.factors import load_factor_model
from cnnjax.runs.opening import read_run
from cnnjax.runs.restore import open_spec
from cnnjax.train.factors_program import TRAIN_FACTORS_HINT

GRID_ROWS = 8
RESULT_FILE = "attributes.json"
_GENERATIVE_HINT = "pass the --workdir of a GAN or VAE run"


def _check_out(out: str, workdirs: Sequence[str]) -> None:
  for workdir in workdirs:
    if os.path.commonpath([out, workdir]) == workdir:
      raise ConfigError(f"--out={out} is inside the run directory {workdir}; choose a "
                        "directory outside it (the runs' files are never written).")


def _grid(images_snhwc: np.ndarray) -> np.ndarray:
  """Rows: the first `GRID_ROWS` latents; columns: the strengths."""
  rows = images_snhwc[:, :GRID_ROWS].transpose(1, 0, 2, 3, 4)
  return make_grid(rows.reshape(-1, *rows.shape[2:]), num_cols=images_snhwc.shape[0])


def run_attributes(workdir: str, *, out: str, factors_workdir: str, attribute: str,
                   method: str, conditions: Sequence[str], strengths: Sequence[float],
                   threshold: float, num_label: int, num_edit: int, seed: int,
                   step: int | None) -> dict:
  """Fits, applies and measures one attribute edit; returns the JSON result.

  Raises:
    ConfigError: the run is not a GAN/VAE on shapes, or the factor model was trained
      on images of another resolution or channel count.
  """
  spec = read_run(workdir, kinds=("gan", "vae"), hint=_GENERATIVE_HINT)
  name = spec.config.data.name
  if dataset_family(name) != "shapes":
    raise ConfigError(f"{spec.workdir} was trained on {name!r}, not shapes: attribute "
                      "edits are measured against shapes' ground-truth factors; pass a "
                      "run trained on shapes (or use --analogy).")
  factors_spec = read_run(factors_workdir, kinds=("factors",),
                          hint=f"train one with `{TRAIN_FACTORS_HINT}`")
  run_shape = (spec.config.data.image_size, spec.data_info["image_shape"][-1])
  factor_shape = (factors_spec.config.data.image_size,
                  factors_spec.data_info["image_shape"][-1])
  if run_shape != factor_shape:
    raise ConfigError(
        f"The factor model in {factors_spec.workdir} reads {factor_shape[0]} px images "
        f"with {factor_shape[1]} channels, but {spec.workdir} makes {run_shape[0]} px "
        f"images with {run_shape[1]} channels; train a factor model at the run's "
        "resolution (--config.data.image_size).")
  out = os.path.abspath(out)
  _check_out(out, (spec.workdir, factors_spec.workdir))
  run = open_spec(spec, step)
  factor_model = load_factor_model(factors_spec.workdir)
  result, images = attribute_edit(
      run, factor_model, attribute=attribute, method=method, strengths=strengths,
      conditions=conditions, threshold=threshold, num_label=num_label,
      num_edit=num_edit, seed=seed)
  os.makedirs(out, exist_ok=True)
  grid_name = f"attribute_{attribute}_{method}.png"
  save_png(os.path.join(out, grid_name), _grid(images))
  result = {"mode": "attribute", "workdir": spec.workdir, "grid": grid_name, **result}
  write_json_atomic(os.path.join(out, RESULT_FILE), result)
  for edit in result["edits"]:
    logging.info("strength %+.2f: %s change %+.4f, success %s", edit["strength"],
                 attribute, edit["attribute_change"], edit["success_rate"])
  return result


def run_analogy(workdir: str, *, out: str, classes: tuple[int, int],
                strengths: Sequence[float], num_label: int, num_edit: int,
                step: int | None) -> dict:
  """The class analogy grid of a VAE (rows: test images of the source class; columns:
  the input, then each strength of the class difference); returns the JSON result."""
  spec = read_run(workdir, kinds=("vae",), hint="the analogy encodes real images: pass "
                  "a VAE's --workdir")
  out = os.path.abspath(out)
  _check_out(out, (spec.workdir,))
  run = open_spec(spec, step)
  result, images = class_analogy(run, source_class=classes[0], target_class=classes[1],
                                 strengths=strengths, num_label=num_label,
                                 num_edit=num_edit)
  os.makedirs(out, exist_ok=True)
  grid_name = f"analogy_{classes[0]}_to_{classes[1]}.png"
  save_png(os.path.join(out, grid_name), _grid(images))
  result = {"mode": "analogy", "workdir": spec.workdir, "dataset": spec.config.data.name,
            "grid": grid_name, **result}
  write_json_atomic(os.path.join(out, RESULT_FILE), result)
  return result
