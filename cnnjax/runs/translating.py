"""`run.py translate`: a translation run's outputs for a user's image or a dataset split,
as a PNG grid with one row per example: input | output (| target)."""

import os

import numpy as np
from absl import logging

from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.errors import ConfigError, WorkdirError
from cnnjax.io.image_files import read_image
from cnnjax.io.images import make_grid, save_png
from cnnjax.runs import pix2pix
from cnnjax.runs.opening import open_run
from cnnjax.train.translation_state import triptychs

TRANSLATION_KINDS = ("pix2pix",)


def _check_out(out: str) -> None:
  if not out.lower().endswith(".png"):
    raise ConfigError(f"--out must name a .png file, got {out!r}.")
  out_dir = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(out_dir):
    raise WorkdirError(f"The directory of --out ({out_dir}) does not exist; create it "
                       "first.")


def _split_inputs(run, split: str, num: int) -> tuple[np.ndarray, np.ndarray | None]:
  config = run.config.copy_and_resolve_references()
  config.unlock()
  config.data.test_split = split
  pairs = pix2pix.test_pairs(config, num)
  return scale_to_unit_range(pairs.sources), scale_to_unit_range(pairs.targets)


def translate_to_png(workdir: str, *, out: str, input_path: str | None = None,
                     split: str | None = None, num: int = 8, seed: int = 0,
                     step: int | None = None, resize: bool = False) -> np.ndarray:
  """Translates `input_path` (a PNG/JPEG of the run's input size, or any size with
  `resize`) or the first `num` examples of the run's dataset `split`, and writes the
  grid to `out`; returns the outputs (N, H, W, C) in [-1, 1].

  Raises:
    ConfigError: neither or both of input_path and split, a bad --out or --num.
    ImageError: the input is unreadable or of the wrong size.
    DatasetError: the split does not exist.
    WorkdirError, CheckpointError: no usable translation run.
  """
  if (input_path is None) == (split is None):
    raise ConfigError("Pass exactly one of --input=IMAGE_FILE and --split=SPLIT "
                      "(e.g. --split=test).")
  if num <= 0:
    raise ConfigError(f"--num must be positive, got {num}.")
  _check_out(out)
  hint = "pass the --workdir of a pix2pix run (configs/pix2pix.py)"
  run = open_run(workdir, step, kinds=TRANSLATION_KINDS, hint=hint)
  size = run.program.image_size
  if input_path is not None:
    sources = read_image(input_path, channels=run.program.source_channels,
                         size=(size, size), resize=resize)[None]
    targets = None
  else:
    sources, targets = _split_inputs(run, split, num)
  outputs = run.program.translate_state(run.state, sources, seed)
  rows = (sources, outputs) if targets is None else (sources, outputs, targets)
  save_png(out, make_grid(triptychs(*rows), num_cols=1))
  logging.info("Wrote %d translations from step %d to %s.", len(sources), run.step, out)
  return outputs
