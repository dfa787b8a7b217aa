"""cnnjax: convolutional image generation and editing in JAX/Flax.

Commands (the first positional argument; `train` when omitted):
  train   Train an experiment into a work directory:
            python run.py --config=configs/dcgan.py --workdir=DIR
          Pick a config variant after a colon (--config=configs/dcgan.py:tiny) and
          override any field (--config.train.num_steps=500). Misspelt fields are errors.
          Relaunching the same command on the same DIR resumes from its newest complete
          checkpoint; SIGTERM/SIGINT checkpoint the current step and exit with status 0.
  sample  Write a PNG grid of samples from a run's checkpoint (no training data needed):
            python run.py sample --workdir=DIR --num=64 --seed=0 --out=FILE.png [--step=N]
              [--labels=0,1,2]
          A class-conditional run draws one class per grid row: every class, or the
          --labels given (a label outside the run's classes is an error).
  evaluate  Score a generative run's checkpoint with an in-domain classifier (FID, KID,
          IS, precision/recall/density/coverage, two-sample test) into DIR/eval.json:
            python run.py evaluate --workdir=DIR [--num_samples=10000] [--seed=0] [--step=N]
              [--extractor_workdir=CLASSIFIER_DIR] [--reference_split=test]
          The classifier is the run's eval.extractor_workdir, trained with
            python run.py --config=configs/classifier.py:digits --workdir=CLASSIFIER_DIR
  sweep   Run every run of a sweep file (experiments/NAME.py) into DIR/<run name>, one
          per device group at a time, with a manifest DIR/sweep.json; rerunning resumes:
            python run.py sweep --sweep=experiments/NAME.py --workdir=DIR
              [--launcher=local|slurm] [--devices_per_run=N]
          --launcher=slurm writes DIR/sweep.slurm, an array job, and says how to submit it.
  report  Tables (DIR/report.md, DIR/report.csv) and plots of a finished sweep:
            python run.py report --workdir=DIR [--metrics=fid,class_accuracy]
          --metrics: the summary table's and bar charts' metrics (default: the
          sweep's summary_metrics, else its report_metric).

Bad input (flags, config values, datasets, work directories) ends with a one-line
`error: ...` on stderr and exit status 2, before anything in the work directory changes.
"""

import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cnnjax.errors import CnnjaxError

COMMANDS = ("train", "sample", "evaluate", "sweep", "report")

config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, optionally with a variant: "
    "configs/dcgan.py:tiny. Fields are overridden with --config.SECTION.FIELD=VALUE.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Work directory of the run (created if missing).")
flags.DEFINE_integer("num", 64, "sample: number of images.")
flags.DEFINE_integer("seed", 0, "sample: seed of the latents.")
flags.DEFINE_string("out", None, "sample: the PNG file to write.")
flags.DEFINE_integer("step", None, "sample: checkpoint step (default: the newest).")
flags.DEFINE_string("labels", None, "sample: comma-separated classes of a conditional run, "
                    "one per grid row (default: every class).")
flags.DEFINE_integer("num_samples", None, "evaluate: samples to score (default: the run's "
                     "eval.num_samples).")
flags.DEFINE_string("extractor_workdir", None, "evaluate: the classifier run to score with "
                    "(default: the run's eval.extractor_workdir).")
flags.DEFINE_string("reference_split", None, "evaluate: the real split to compare with "
                    "(default: the run's eval.reference_split).")
flags.DEFINE_string("sweep", None, "sweep: the sweep file, e.g. experiments/gan_ablation.py.")
flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "sweep: run the runs here, or "
                  "write a SLURM array job.")
flags.DEFINE_integer("devices_per_run", None, "sweep: devices of each run (default: one "
                     "GPU, or every CPU/TPU device).")
flags.DEFINE_list("metrics", None, "report: metrics of the summary table and bar charts, "
                  "e.g. fid,class_accuracy (default: the sweep's summary_metrics).")
FLAGS = flags.FLAGS


def fail(message: str) -> None:
  """Prints a one-line error and exits with status 2."""
  sys.stderr.write("error: " + " ".join(str(message).split()) + "\n")
  sys.stderr.flush()
  sys.exit(2)


def _last_line(error: BaseException) -> str:
  """The final line of an error message (config-file errors embed a traceback)."""
  lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
  return lines[-1] if lines else type(error).__name__


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose errors are one line (absl's own add a usage hint)."""
  try:
    return FLAGS(argv)
  except flags.Error as error:
    message = str(error)
    flag = message.split(":", 1)[0] if message.startswith("flag ") else "flags"
    fail(f"{flag}: {_last_line(error)}")
  except (AttributeError, KeyError) as error:  # A misspelt --config.FIELD override.
    unknown = [arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("--config.")]
    suggestion = re.search(r'Did you mean "([^"]+)"', str(error))
    hint = f"; did you mean {suggestion.group(1)!r}?" if suggestion else "."
    fail(f"No such config field among {', '.join(unknown)}{hint} "
         "(see the config file for the fields).")
  except CnnjaxError as error:
    fail(error)


def main(argv: list[str]) -> None:
  command, *rest = argv[1:] or ["train"]
  if command not in COMMANDS or rest:
    fail(f"Unknown command {' '.join(argv[1:])!r}: use one of {', '.join(COMMANDS)} "
         "(see python run.py --help).")
  if FLAGS.workdir is None:
    fail("--workdir is required: the directory of the run.")
  try:
    if command == "train":
      _train()
    elif command == "sample":
      _sample()
    elif command == "evaluate":
      _evaluate()
    elif command == "sweep":
      _sweep()
    elif command == "report":
      _report()
  except CnnjaxError as error:
    logging.flush()
    fail(error)


def _train() -> None:
  config = FLAGS.config
  if config is None:
    fail("--config is required for train, e.g. --config=configs/dcgan.py.")
  try:
    config.keys()  # A config file that failed to load raises on first access.
  except OSError as error:
    fail(f"--config: {_last_line(error)}")
  from cnnjax.train.experiments import train_and_evaluate  # Imports jax: after flag errors.
  train_and_evaluate(config, FLAGS.workdir)


def _sample() -> None:
  if FLAGS.out is None:
    fail("--out is required for sample: the PNG file to write.")
  labels = None
  if FLAGS.labels is not None:
    try:
      labels = [int(label) for label in FLAGS.labels.split(",")]
    except ValueError:
      fail(f"--labels must be comma-separated integer classes such as 0,1,2, got "
           f"{FLAGS.labels!r}.")
  from cnnjax.train.sampling import sample_to_png
  sample_to_png(FLAGS.workdir, num=FLAGS.num, seed=FLAGS.seed, out=FLAGS.out,
                step=FLAGS.step, labels=labels)


def _evaluate() -> None:
  if FLAGS.num_samples is not None and FLAGS.num_samples <= 0:
    fail(f"--num_samples must be positive, got {FLAGS.num_samples}.")
  from cnnjax.evaluation.evaluate import evaluate_run  # Imports jax: after flag errors.
  evaluate_run(FLAGS.workdir, num_samples=FLAGS.num_samples, seed=FLAGS.seed,
               step=FLAGS.step, extractor_workdir=FLAGS.extractor_workdir,
               reference_split=FLAGS.reference_split)


def _sweep() -> None:
  if FLAGS.sweep is None:
    fail("--sweep is required for sweep, e.g. --sweep=experiments/gan_ablation.py.")
  from cnnjax.sweeps.launch import run_sweep_command
  problem = run_sweep_command(FLAGS.sweep, FLAGS.workdir, launcher=FLAGS.launcher,
                              devices_per_run=FLAGS.devices_per_run)
  if problem:
    sys.stderr.write(f"error: {problem}\n")
    sys.exit(1)


def _report() -> None:
  from cnnjax.sweeps.report import write_report
  print(write_report(FLAGS.workdir, FLAGS.metrics or ()))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
