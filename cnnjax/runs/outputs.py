"""What the read-only commands write from a finished run: a sample grid (`run.py
sample`), `DIR/eval.json` (`run.py evaluate`) and `DIR/likelihood.json` (`run.py
likelihood`). Each asks the run's kind what the command means for it.
"""

import os
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging

from cnnjax.errors import ConfigError, WorkdirError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.workdir import EVAL_FILE, write_json_atomic
from cnnjax.runs import vae
from cnnjax.runs.opening import read_run
from cnnjax.runs.restore import OpenRun, restore_state, spec_as
from cnnjax.runs.scoring import check_sample_labels


def sample_to_png(workdir: str, *, num: int, seed: int, out: str,
                  step: int | None = None, labels: Sequence[int] | None = None) -> int:
  """Writes a grid of `num` samples of the run in `workdir` to the PNG `out`.

  Args:
    workdir: the run.
    num: images in the grid.
    seed: seed of the latents.
    out: the PNG file.
    step: the checkpoint (default: the newest).
    labels: classes of a conditional run, one per grid row (cycling); None: every
      class of a conditional run.

  Returns:
    The checkpoint step the samples come from.

  Raises:
    ConfigError, WorkdirError, CheckpointError: bad arguments or an unusable run.
  """
  if num <= 0:
    raise ConfigError(f"--num must be positive, got {num}.")
  if not out.lower().endswith(".png"):
    raise ConfigError(f"--out must name a .png file, got {out!r}.")
  out_dir = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(out_dir):
    raise WorkdirError(f"The directory of --out ({out_dir}) does not exist; create it "
                       "first.")
  spec = read_run(workdir)
  sample = spec.kind.require("sample", spec.workdir)
  program = spec.build_program()
  if labels is not None:  # Checked before any checkpoint is read.
    check_sample_labels(program, labels, spec.workdir)
  state, restored_step = restore_state(spec, program, step)
  run = OpenRun(spec=spec, program=program, state=state, step=restored_step)
  images = sample(run, num=num, seed=seed, labels=labels)
  save_png(out, make_grid(np.asarray(jax.device_get(images))))
  logging.info("Wrote %d samples from step %d to %s.", num, run.step, out)
  return run.step


def evaluate_run(workdir: str, *, num_samples: int | None = None, seed: int = 0,
                 step: int | None = None, extractor_workdir: str | None = None,
                 reference_split: str | None = None) -> dict[str, Any]:
  """Scores a run's checkpoint as its kind defines and writes `workdir/eval.json`.

  Returns:
    {"step", "metrics", "settings"}, as written to eval.json.

  Raises:
    ConfigError: a kind with nothing to evaluate, or bad settings.
    WorkdirError, CheckpointError: an unusable run or extractor.
  """
  spec = read_run(workdir)
  evaluate = spec.kind.require("evaluate", spec.workdir)
  result = evaluate(spec, num_samples=num_samples, seed=seed, step=step,
                    extractor_workdir=extractor_workdir, reference_split=reference_split)
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(spec.workdir, EVAL_FILE), result)
  return result


def likelihood_run(workdir: str, *, split: str = "test",
                   num_importance: int | None = None, seed: int = 0,
                   step: int | None = None) -> dict[str, Any]:
  """The test ELBO and IWAE bound of a VAE run, into `workdir/likelihood.json`."""
  spec = spec_as(workdir, vae.KIND)
  return vae.likelihood_of_run(spec, split=split, num_importance=num_importance,
                               seed=seed, step=step)
