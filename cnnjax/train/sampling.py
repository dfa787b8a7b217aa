"""`run.py sample`: images from a run's checkpoint, without its training data."""

import os
from typing import Any, Sequence

import jax
import numpy as np
from absl import logging

from cnnjax.errors import CheckpointError, ConfigError, WorkdirError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.workdir import load_run_config
from cnnjax.train import parallel
from cnnjax.train.checkpointing import Checkpointer
from cnnjax.train.experiments import build_program
from cnnjax.train.gan_program import grid_row_labels


def build_run_program(workdir: str):
  """The program of a run's config and data, as its training built it: (config, program)."""
  config, data_info = load_run_config(workdir)
  program = build_program(config, mesh=parallel.make_data_mesh(),
                          channels=data_info["image_shape"][-1],
                          num_classes=data_info["num_classes"])
  return config, program


def restore_program_state(workdir: str, config, program, step: int | None = None):
  """Restores `program`'s state from the run's checkpoint (read-only): (state, step)."""
  checkpointer = Checkpointer(workdir, config.checkpoint, read_only=True)
  try:
    restored = checkpointer.restore(jax.eval_shape(program.init_state), step=step)
  finally:
    checkpointer.close()
  if restored is None:
    raise CheckpointError(f"{workdir} has no readable checkpoint yet; train longer "
                          "or pick a run with checkpoints.")
  return restored


def restore_run_state(workdir: str, step: int | None = None):
  """Builds a run's program and restores its state from a checkpoint (read-only).

  Returns:
    (config, program, state, step).
  """
  config, program = build_run_program(workdir)
  state, restored_step = restore_program_state(workdir, config, program, step)
  return config, program, state, restored_step


def check_sample_labels(program: Any, labels: Sequence[int], workdir: str) -> None:
  """Raises `ConfigError` unless `program` is conditional and knows every label."""
  num_classes = getattr(program, "num_classes", 0)
  if not num_classes:
    raise ConfigError(f"--labels needs a class-conditional run, and {workdir} holds an "
                      "unconditional one; leave --labels out.")
  if not labels:
    raise ConfigError("--labels is empty; give comma-separated class labels, e.g. 0,1,2.")
  for label in labels:
    if not 0 <= label < num_classes:
      raise ConfigError(f"--labels: {label} is not a class of this run; use labels from "
                        f"0 to {num_classes - 1}.")


def sample_to_png(workdir: str, *, num: int, seed: int, out: str,
                  step: int | None = None, labels: Sequence[int] | None = None) -> int:
  """Writes a grid of `num` samples, latents drawn from `seed`, to the PNG `out`.

  Args:
    workdir: the run.
    num: images in the grid.
    seed: seed of the latents.
    out: the PNG file.
    step: the checkpoint (default: the newest).
    labels: classes of a conditional run, one per grid row (cycling); None: every
      class of a conditional run (or none for an unconditional one).

  Returns:
    The checkpoint step the samples come from.
  """
  if num <= 0:
    raise ConfigError(f"--num must be positive, got {num}.")
  if not out.lower().endswith(".png"):
    raise ConfigError(f"--out must name a .png file, got {out!r}.")
  out_dir = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(out_dir):
    raise WorkdirError(f"The directory of --out ({out_dir}) does not exist; create it "
                       "first.")
  workdir = os.path.abspath(workdir)
  config, program = build_run_program(workdir)
  if labels is not None:
    check_sample_labels(program, labels, workdir)
  state, restored_step = restore_program_state(workdir, config, program, step)
  latents = jax.random.normal(jax.random.key(seed), (num, program.latent_dim))
  if labels is None:
    images = program.generate(state, latents)
  else:
    images = program.generate(state, latents, grid_row_labels(num, labels))
  save_png(out, make_grid(np.asarray(jax.device_get(images))))
  logging.info("Wrote %d samples from step %d to %s.", num, restored_step, out)
  return restored_step
