"""`run.py sample`: images from a run's checkpoint, without its training data."""

import os

import jax
import numpy as np
from absl import logging

from cnnjax.errors import CheckpointError, ConfigError, WorkdirError
from cnnjax.io.images import make_grid, save_png
from cnnjax.io.workdir import load_run_config
from cnnjax.train import parallel
from cnnjax.train.checkpointing import Checkpointer
from cnnjax.train.experiments import build_program

def restore_run_state(workdir: str, step: int | None = None):
  """Builds a run's program and restores its state from a checkpoint (read-only).

  Returns:
    (config, program, state, step).
  """
  config, data_info = load_run_config(workdir)
  program = build_program(config, mesh=parallel.make_data_mesh(),
                          channels=data_info["image_shape"][-1],
                          num_classes=data_info["num_classes"])
  checkpointer = Checkpointer(workdir, config.checkpoint, read_only=True)
  try:
    restored = checkpointer.restore(jax.eval_shape(program.init_state), step=step)
  finally:
    checkpointer.close()
  if restored is None:
    raise CheckpointError(f"{workdir} has no readable checkpoint yet; train longer "
                          "or pick a run with checkpoints.")
  state, restored_step = restored
  return config, program, state, restored_step


def sample_to_png(workdir: str, *, num: int, seed: int, out: str,
                  step: int | None = None) -> int:
  """Writes a grid of `num` samples, latents drawn from `seed`, to the PNG `out`.

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
  config, program, state, restored_step = restore_run_state(workdir, step)
  latents = jax.random.normal(jax.random.key(seed), (num, program.latent_dim))
  images = np.asarray(jax.device_get(program.generate(state, latents)))
  save_png(out, make_grid(images))
  logging.info("Wrote %d samples from step %d to %s.", num, restored_step, out)
  return restored_step
