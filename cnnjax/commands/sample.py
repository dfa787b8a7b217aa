"""`run.py sample`: a PNG grid of samples from a run's checkpoint, without its data."""

from absl import flags

from cnnjax.commands import common

NAME = "sample"
USAGE = """\
  sample  Write a PNG grid of samples from a run's checkpoint (no training data needed):
            python run.py sample --workdir=DIR --num=64 --seed=0 --out=FILE.png [--step=N]
              [--labels=0,1,2]
          A class-conditional run draws one class per grid row: every class, or the
          --labels given (a label outside the run's classes is an error)."""

NUM = flags.DEFINE_integer("num", 64, "sample: number of images.")
LABELS = flags.DEFINE_string("labels", None, "sample: comma-separated classes of a "
                             "conditional run, one per grid row (default: every class).")


def _labels() -> list[int] | None:
  if LABELS.value is None:
    return None
  try:
    return [int(label) for label in LABELS.value.split(",")]
  except ValueError:
    common.fail(f"--labels must be comma-separated integer classes such as 0,1,2, got "
                f"{LABELS.value!r}.")


def main() -> None:
  workdir = common.required_workdir()
  out = common.OUT.value
  if out is None:
    common.fail("--out is required for sample: the PNG file to write.")
  labels = _labels()
  from cnnjax.runs.outputs import sample_to_png  # Imports jax: after flag errors.
  sample_to_png(workdir, num=NUM.value, seed=common.SEED.value, out=out,
                step=common.STEP.value, labels=labels)
