"""`run.py attributes`: attribute vector arithmetic on a GAN or VAE run, measured by a
factor model (shapes), or the class analogy of a VAE (digits)."""

import math
import os

from absl import flags

from cnnjax.commands import common

NAME = "attributes"
USAGE = """\
  attributes  Attribute directions in a GAN's or VAE's latent space (mean difference or
          a linear classifier's normal), applied with a strength sweep and measured by a
          factor model (configs/factors.py) of shapes; or the class analogy of a VAE:
            python run.py attributes --workdir=RUN --factors_workdir=FACTORS_RUN
              --attribute=scale [--method=mean_difference|linear] [--condition_on=x,y]
              [--strengths=-2,-1,0,1,2] [--threshold=0.25] --out=DIR
            python run.py attributes --workdir=VAE_RUN --analogy=3,8 --out=DIR"""

FACTORS_WORKDIR = flags.DEFINE_string(
    "factors_workdir", None, "attributes: the factor model run (configs/factors.py) that "
    "labels GAN latents and measures every edit.")
ATTRIBUTE = flags.DEFINE_string(
    "attribute", None, "attributes: the attribute to edit (x, y, scale, hue, hue_sin, "
    "rotation, or a shape class: circle, square, ...).")
METHOD = flags.DEFINE_string(
    "method", "mean_difference", "attributes: how the direction is found: "
    "mean_difference or linear (a logistic-regression normal, as InterFaceGAN).")
CONDITION_ON = flags.DEFINE_list(
    "condition_on", [], "attributes: attributes whose directions are projected out "
    "(conditional manipulation).")
STRENGTHS = flags.DEFINE_string(
    "strengths", "-3,-2,-1,0,1,2,3", "attributes: comma-separated edit strengths, in "
    "latent units along the unit direction (for --analogy: multiples of the class "
    "difference).")
THRESHOLD = flags.DEFINE_float(
    "threshold", 0.25, "attributes: an edit succeeds when the attribute moved the asked "
    "way by at least this many standard deviations of it over the labelled latents.")
NUM_LABEL = flags.DEFINE_integer("num_label", 2000, "attributes: latents labelled to "
                                 "fit the direction.")
NUM_EDIT = flags.DEFINE_integer("num_edit", 256, "attributes: latents edited and "
                                "measured (the grid shows the first 8).")
ANALOGY = flags.DEFINE_string(
    "analogy", None, "attributes: SOURCE,TARGET classes: adds the mean-latent "
    "difference (target - source) to the source class's test images (VAE).")


def parse_strengths(text: str) -> list[float]:
  """`-2,0,2` -> [-2.0, 0.0, 2.0]; raises ConfigError for anything else."""
  from cnnjax.errors import ConfigError
  try:
    values = [float(part) for part in text.split(",")]
  except ValueError:
    values = []
  if not values or not all(math.isfinite(value) for value in values):
    raise ConfigError(f"--strengths={text!r} is not a comma-separated list of finite "
                      "numbers, e.g. --strengths=-2,-1,0,1,2.")
  return values


def _parse_analogy(text: str) -> tuple[int, int]:
  from cnnjax.errors import ConfigError
  parts = text.split(",")
  if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
    raise ConfigError(f"--analogy={text!r} must be two class indices SOURCE,TARGET, "
                      "e.g. --analogy=3,8.")
  return int(parts[0]), int(parts[1])


def _check_inputs():
  from cnnjax.editing.attributes import METHODS, check_attribute
  from cnnjax.errors import ConfigError
  if common.OUT.value is None:
    raise ConfigError("--out is required: the directory for the grids and "
                      "attributes.json.")
  strengths = parse_strengths(STRENGTHS.value)
  for name, value in (("num_label", NUM_LABEL.value), ("num_edit", NUM_EDIT.value)):
    if value <= 1:
      raise ConfigError(f"--{name} must be at least 2, got {value}.")
  if ANALOGY.value is not None:
    return strengths, _parse_analogy(ANALOGY.value)
  if ATTRIBUTE.value is None:
    raise ConfigError("--attribute is required (or --analogy=SOURCE,TARGET).")
  for name in (ATTRIBUTE.value, *CONDITION_ON.value):
    check_attribute(name)
  if METHOD.value not in METHODS:
    raise ConfigError(f"Unknown --method={METHOD.value!r}: use one of "
                      f"{', '.join(METHODS)}.")
  if FACTORS_WORKDIR.value is None:
    raise ConfigError("--factors_workdir is required: a factor model run, trained with "
                      "`python run.py --config=configs/factors.py --workdir=DIR`.")
  if THRESHOLD.value < 0:
    raise ConfigError(f"--threshold must be >= 0, got {THRESHOLD.value}.")
  return strengths, None


def main() -> None:
  workdir = common.required_workdir()
  strengths, analogy = _check_inputs()
  out = os.path.abspath(os.path.expanduser(common.OUT.value))
  from cnnjax.editing.attribute_command import run_analogy, run_attributes  # jax.
  if analogy is not None:
    run_analogy(workdir, out=out, classes=analogy, strengths=strengths,
                num_label=NUM_LABEL.value, num_edit=NUM_EDIT.value, step=common.STEP.value)
    return
  run_attributes(workdir, out=out, factors_workdir=FACTORS_WORKDIR.value,
                 attribute=ATTRIBUTE.value, method=METHOD.value,
                 conditions=CONDITION_ON.value, strengths=strengths,
                 threshold=THRESHOLD.value, num_label=NUM_LABEL.value,
                 num_edit=NUM_EDIT.value, seed=common.SEED.value, step=common.STEP.value)
