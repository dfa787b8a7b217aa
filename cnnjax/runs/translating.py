"""`run.py translate`: a translation run's outputs for a user's image or a dataset split,
as a PNG grid with one row per example: input | output (| target) for pix2pix, input |
output | output translated back for CycleGAN (A -> B, or B -> A with
`direction="b_to_a"`)."""

import os

import numpy as np
from absl import logging

from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.data.unpaired import open_domain
from cnnjax.errors import ConfigError, WorkdirError
from cnnjax.io.image_files import read_image
from cnnjax.io.images import make_grid, save_png
from cnnjax.runs import pix2pix
from cnnjax.runs.opening import read_run
from cnnjax.runs.restore import open_spec
from cnnjax.train.translation_state import triptychs

TRANSLATION_KINDS = ("pix2pix", "cyclegan")
DIRECTIONS = ("a_to_b", "b_to_a")


def _check_out(out: str) -> None:
  if not out.lower().endswith(".png"):
    raise ConfigError(f"--out must name a .png file, got {out!r}.")
  out_dir = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(out_dir):
    raise WorkdirError(f"The directory of --out ({out_dir}) does not exist; create it "
                       "first.")


def _split_inputs(run, split: str, num: int, direction: str
                  ) -> tuple[np.ndarray, np.ndarray | None]:
  """`num` sources of `split` (the source domain's split for CycleGAN) and their
  targets (pix2pix; None for CycleGAN)."""
  if run.kind.name == "cyclegan":
    domain = "domain_a" if direction == "a_to_b" else "domain_b"
    images, _ = open_domain(run.config.data, domain, split)
    return scale_to_unit_range(images.first(num).images), None
  config = run.config.copy_and_resolve_references()
  config.unlock()
  config.data.test_split = split
  pairs = pix2pix.test_pairs(config, num)
  return scale_to_unit_range(pairs.sources), scale_to_unit_range(pairs.targets)


def _rows(run, sources: np.ndarray, targets: np.ndarray | None, seed: int,
          direction: str) -> tuple[np.ndarray, ...]:
  if run.kind.name == "cyclegan":
    return (sources, *run.program.round_trip(run.state, sources, direction))
  outputs = run.program.translate_state(run.state, sources, seed)
  return (sources, outputs) if targets is None else (sources, outputs, targets)


def translate_to_png(workdir: str, *, out: str, input_path: str | None = None,
                     split: str | None = None, num: int = 8, seed: int = 0,
                     step: int | None = None, resize: bool = False,
                     direction: str = "a_to_b") -> np.ndarray:
  """Translates `input_path` (a PNG/JPEG of the run's input size, or any size with
  `resize`) or the first `num` examples of the run's dataset `split` (for CycleGAN: of
  the source domain's dataset), and writes the grid to `out`; returns the outputs
  (N, H, W, C) in [-1, 1].

  `direction` (CycleGAN runs only): `a_to_b` (G) or `b_to_a` (F).

  Raises:
    ConfigError: neither or both of input_path and split, a bad --out or --num, a
      direction other than a_to_b for a pix2pix run.
    ImageError: the input is unreadable or of the wrong size.
    DatasetError: the split does not exist.
    WorkdirError, CheckpointError: no usable translation run.
  """
  if (input_path is None) == (split is None):
    raise ConfigError("Pass exactly one of --input=IMAGE_FILE and --split=SPLIT "
                      "(e.g. --split=test).")
  if num <= 0:
    raise ConfigError(f"--num must be positive, got {num}.")
  if direction not in DIRECTIONS:
    raise ConfigError(f"The direction must be one of {', '.join(DIRECTIONS)}, got "
                      f"{direction!r}.")
  _check_out(out)
  hint = ("pass the --workdir of a pix2pix or cyclegan run (configs/pix2pix.py, "
          "configs/cyclegan.py)")
  spec = read_run(workdir, kinds=TRANSLATION_KINDS, hint=hint)
  if spec.kind.name != "cyclegan" and direction != "a_to_b":
    raise ConfigError(f"{spec.workdir} holds a {spec.kind.name!r} run, which translates "
                      f"one way only; --translation_direction={direction} needs a "
                      "cyclegan run.")
  run = open_spec(spec, step)
  size = run.program.image_size
  if input_path is not None:
    channels = (run.program.input_channels(direction) if spec.kind.name == "cyclegan"
                else run.program.source_channels)
    sources = read_image(input_path, channels=channels, size=(size, size),
                         resize=resize)[None]
    targets = None
  else:
    sources, targets = _split_inputs(run, split, num, direction)
  rows = _rows(run, sources, targets, seed, direction)
  save_png(out, make_grid(triptychs(*rows), num_cols=1))
  logging.info("Wrote %d translations from step %d to %s.", len(sources), run.step, out)
  return rows[1]
