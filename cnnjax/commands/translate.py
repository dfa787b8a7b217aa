"""`run.py translate`: a translation run's outputs beside their inputs, as a PNG grid."""

from absl import flags

from cnnjax.commands import common

NAME = "translate"
USAGE = """\
  translate  Translate an image file or a dataset split with a pix2pix or CycleGAN run,
          into a PNG grid with one row per example: input | output (| target for a
          pix2pix split; | output translated back for CycleGAN):
            python run.py translate --workdir=DIR --input=IMAGE.png --out=FILE.png
              [--resize_input] [--seed=0] [--step=N] [--translation_direction=b_to_a]
            python run.py translate --workdir=DIR --split=test --num_examples=8 --out=FILE.png
          The input must have the run's image size unless --resize_input is given.
          CycleGAN translates A -> B unless --translation_direction=b_to_a."""

INPUT = flags.DEFINE_string("input", None, "translate: a PNG or JPEG file to translate.")
RESIZE_INPUT = flags.DEFINE_boolean("resize_input", False, "translate: resize --input "
                                    "to the run's image size instead of refusing it.")
DIRECTION = flags.DEFINE_enum(
    "translation_direction", "a_to_b", ["a_to_b", "b_to_a"], "translate: for a CycleGAN "
    "run, A -> B (G) or B -> A (F); --split then reads the source domain's dataset.")
NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 8, "translate: examples of --split.")


def main() -> None:
  workdir = common.required_workdir()
  out = common.OUT.value
  if out is None:
    common.fail("--out is required for translate: the PNG file to write.")
  if (INPUT.value is None) == (common.SPLIT.value is None):
    common.fail("Pass exactly one of --input=IMAGE_FILE and --split=SPLIT (e.g. "
                "--split=test) to translate.")
  if NUM_EXAMPLES.value <= 0:
    common.fail(f"--num_examples must be positive, got {NUM_EXAMPLES.value}.")
  from cnnjax.runs.translating import translate_to_png  # Imports jax: after flag errors.
  translate_to_png(workdir, out=out, input_path=INPUT.value, split=common.SPLIT.value,
                   num=NUM_EXAMPLES.value, seed=common.SEED.value, step=common.STEP.value,
                   resize=RESIZE_INPUT.value, direction=DIRECTION.value)
