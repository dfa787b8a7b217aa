"""`run.py evaluate`: score a run's checkpoint as its kind defines, into DIR/eval.json."""

from absl import flags

from cnnjax.commands import common

NAME = "evaluate"
MULTI_PROCESS = True
USAGE = """\
  evaluate  Score a generative run's checkpoint with an in-domain classifier (FID, KID,
          IS, precision/recall/density/coverage, two-sample test) into DIR/eval.json:
            python run.py evaluate --workdir=DIR [--num_samples=10000] [--seed=0] [--step=N]
              [--extractor_workdir=CLASSIFIER_DIR] [--reference_split=test]
          The classifier is the run's eval.extractor_workdir, trained with
            python run.py --config=configs/classifier.py:digits --workdir=CLASSIFIER_DIR"""

NUM_SAMPLES = flags.DEFINE_integer("num_samples", None, "evaluate: samples to score "
                                   "(default: the run's eval.num_samples).")
REFERENCE_SPLIT = flags.DEFINE_string("reference_split", None, "evaluate: the real split "
                                      "to compare with (default: the run's "
                                      "eval.reference_split).")


def main() -> None:
  workdir = common.required_workdir()
  if NUM_SAMPLES.value is not None and NUM_SAMPLES.value <= 0:
    common.fail(f"--num_samples must be positive, got {NUM_SAMPLES.value}.")
  from cnnjax.runs.outputs import evaluate_run  # Imports jax: after flag errors.
  evaluate_run(workdir, num_samples=NUM_SAMPLES.value, seed=common.SEED.value,
               step=common.STEP.value, extractor_workdir=common.EXTRACTOR_WORKDIR.value,
               reference_split=REFERENCE_SPLIT.value)
