"""The score of real data: one dataset split evaluated as if generated, against another.

FID and KID are biased upwards for finite samples, and precision/recall depend on the
sample counts, so a perfect generator does not score 0 and 1. This script measures the
floor: real images of `--split` (a seeded subset of `--num_samples`, or all of them)
against the reference statistics of `--reference_split`, with the same in-domain
classifier, metrics and settings as `run.py evaluate`. It writes the metrics and their
settings as JSON.

  python -m experiments.real_data_floor --extractor_workdir=workdirs/classifier_digits \
      --split=train --reference_split=test --out=results/digits_train_vs_test.json
"""

import os
import sys

from absl import app, flags, logging

_EXTRACTOR = flags.DEFINE_string("extractor_workdir", None,
                                 "A trained classifier run (configs/classifier.py).")
_DATASET = flags.DEFINE_string("dataset", None,
                               "TFDS dataset (default: the classifier's).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir (default: the "
                                "classifier's).")
_SPLIT = flags.DEFINE_string("split", "train", "The split scored as if generated.")
_REFERENCE_SPLIT = flags.DEFINE_string("reference_split", "test",
                                       "The split it is compared with.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", None,
                                    "A seeded random subset of --split (default: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the subset and of the metrics.")
_OUT = flags.DEFINE_string("out", None, "The JSON file to write.")
flags.mark_flags_as_required(["extractor_workdir", "out"])


def main(argv: list[str]) -> None:
  del argv
  from cnnjax.errors import CnnjaxError
  from cnnjax.evaluation.evaluate import (INCEPTION_SPLITS, KID_SUBSET_SIZE, PRDC_K,
                                          TWO_SAMPLE_STEPS, evaluate_dataset_split)
  from cnnjax.runs.classifier import load_extractor
  from cnnjax.io.workdir import load_run_config, write_json_atomic
  try:
    extractor = load_extractor(_EXTRACTOR.value)
    config, _ = load_run_config(os.path.abspath(_EXTRACTOR.value))
    dataset = _DATASET.value or config.data.name
    data_dir = _DATA_DIR.value or config.data.data_dir or None
    metrics = evaluate_dataset_split(
        extractor, dataset=dataset, split=_SPLIT.value,
        reference_split=_REFERENCE_SPLIT.value, data_dir=data_dir,
        image_size=config.data.image_size, resize=config.data.resize,
        num_samples=_NUM_SAMPLES.value, seed=_SEED.value)
  except CnnjaxError as error:
    sys.stderr.write(f"error: {error}\n")
    sys.exit(2)
  result = {"metrics": metrics, "settings": {
      "extractor_id": extractor.extractor_id, "dataset": dataset, "split": _SPLIT.value,
      "reference_split": _REFERENCE_SPLIT.value, "num_samples": _NUM_SAMPLES.value,
      "seed": _SEED.value, "image_size": config.data.image_size,
      "kid_subset_size": KID_SUBSET_SIZE, "prdc_k": PRDC_K,
      "inception_splits": INCEPTION_SPLITS, "two_sample_steps": TWO_SAMPLE_STEPS}}
  os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
  write_json_atomic(_OUT.value, result)
  logging.info("Wrote %s: %s", _OUT.value,
               ", ".join(f"{name} {value:.4g}" for name, value in metrics.items()))


if __name__ == "__main__":
  app.run(main)
