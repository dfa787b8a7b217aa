r"""Times evaluation: 10,000 samples scored by the in-domain classifier, against training.

Two comparisons, each measured in the same run on the same machine:

1. **Evaluation against training** (the evaluation issue's speed requirement): the time
   `RunEvaluator.evaluate` takes to generate `--num_samples` samples of the default GAN
   (`--config`), extract their classifier features and logits over every device and
   compute every metric (FID, KID, IS, precision/recall/density/coverage and the
   classifier two-sample test), against the time of `--train_steps` training steps of
   the same GAN fed by its real input pipeline. Evaluation is timed cold (its first
   call: compiling the sampler and the classifier included) and warm (the median of
   `--repeats` further calls); training is timed after its compilation, which is
   reported apart.
2. **Features and FID against PyTorch**: the features of `--num_samples` images through
   the classifier and the FID of those features against the cached reference, by
   cnnjax (`Extractor.features_and_logits`, float64 streaming statistics, the host
   matrix square root) and by an identical PyTorch classifier (same layers and widths)
   with torch's float64 mean and covariance and the same scipy square root, as
   torch-fidelity computes it. Median of `--repeats` after one warm-up.

Run from the repository root, after training the digits classifier:

  python -m experiments.benchmarks.eval_bench \
      --extractor_workdir=workdirs/classifier_digits --output=/tmp/eval_bench.md
"""

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

if __package__ in (None, ""):  # Run as a file: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnnjax.data.pipeline import make_train_dataset  # noqa: E402
from cnnjax.data.sources import (dataset_image_shape, dataset_num_classes,  # noqa: E402
                                 get_data_source)
from cnnjax.runs.registry import kind_of  # noqa: E402
from cnnjax.runs.scoring import run_evaluator  # noqa: E402
from cnnjax.evaluation.features import Extractor  # noqa: E402
from cnnjax.metrics import FeatureStats, fid_from_stats  # noqa: E402
from cnnjax.train import parallel  # noqa: E402
from experiments.benchmarks.timing import (command_line, machine_lines,  # noqa: E402
                                           markdown_table, usable_cores)

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", "configs/dcgan.py",
                                  "The generative experiment whose training is timed.")
  flags.DEFINE_string("extractor_workdir", None, "A trained classifier run.")
  flags.DEFINE_integer("num_samples", 10_000, "Samples per evaluation.")
  flags.DEFINE_integer("train_steps", 100, "Training steps timed.")
  flags.DEFINE_integer("repeats", 3, "Timed warm evaluations (the median counts).")
  flags.DEFINE_bool("include_torch", True, "Time the PyTorch features + FID reference.")
  flags.DEFINE_string("output", "", "Markdown file to write the report into.")
  flags.mark_flags_as_required(["extractor_workdir"])


def _seconds(fn: Callable[[], object]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def time_training(config: ml_collections.ConfigDict, num_steps: int):
  """Seconds of `num_steps` training steps (input pipeline included), compile apart.

  Returns:
    (compile_seconds, train_seconds, program, state).
  """
  mesh = parallel.make_data_mesh()
  source, info = get_data_source(config.data.name, config.data.split,
                                 config.data.data_dir or None)
  num_classes = dataset_num_classes(info)
  program = kind_of(config).build_program(
      config, mesh=mesh, data_info={"image_shape": list(dataset_image_shape(info)),
                                    "num_classes": num_classes})
  batches = iter(make_train_dataset(
      source, seed=config.seed, global_batch_size=config.train.batch_size,
      image_size=config.data.image_size, resize=config.data.resize,
      has_label=num_classes is not None, num_threads=config.data.num_threads,
      prefetch=config.data.prefetch, cache_in_memory=config.data.cache_in_memory))
  state = program.init_state()
  start = time.perf_counter()
  state, metrics = program.train_step(state, parallel.put_global_batch(next(batches), mesh))
  jax.block_until_ready(metrics)
  compile_seconds = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(num_steps):
    state, metrics = program.train_step(state,
                                        parallel.put_global_batch(next(batches), mesh))
  jax.block_until_ready((state, metrics))
  return compile_seconds, time.perf_counter() - start, program, state


def torch_features_and_fid(extractor: Extractor, images_nhwc: np.ndarray,
                           reference_stats: FeatureStats) -> Callable[[], float]:
  """A thunk computing features and FID with an identical PyTorch classifier."""
  import scipy.linalg  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from torch import nn  # pylint: disable=g-import-not-at-top

  model_def = extractor.model
  layers, channels = [], images_nhwc.shape[-1]
  for level, width in enumerate(model_def.widths):
    for _ in range(model_def.convs_per_level):
      layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                 nn.BatchNorm2d(width), nn.ReLU()]
      channels = width
    if level < len(model_def.widths) - 1:
      layers.append(nn.MaxPool2d(2, ceil_mode=True))
  trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(channels, model_def.feature_dim, bias=False),
                        nn.BatchNorm1d(model_def.feature_dim), nn.ReLU()).eval()
  batch_size = extractor.batch_size
  images = torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))
  reference_mean = torch.from_numpy(reference_stats.mean)
  reference_cov = reference_stats.covariance

  @torch.inference_mode()
  def run() -> float:
    features = torch.cat([trunk(images[i:i + batch_size])
                          for i in range(0, len(images), batch_size)]).double()
    mean = features.mean(0)
    centred = features - mean
    cov = (centred.T @ centred / (len(features) - 1)).numpy()
    diff = (mean - reference_mean).numpy()
    sqrt, _ = scipy.linalg.sqrtm(cov @ reference_cov, disp=False)
    return float(diff @ diff + np.trace(cov) + np.trace(reference_cov)
                 - 2 * np.trace(sqrt.real))

  return run


def main(argv: Sequence[str]) -> None:
  del argv
  config = FLAGS.config
  num_samples = FLAGS.num_samples
  with config.unlocked():
    config.eval.extractor_workdir = os.path.abspath(FLAGS.extractor_workdir)
  rows = []
  compile_seconds, train_seconds, program, state = time_training(config, FLAGS.train_steps)
  logging.info("%d training steps: %.2f s (compiled in %.1f s)", FLAGS.train_steps,
               train_seconds, compile_seconds)
  reference_seconds = _seconds(lambda: run_evaluator(config))
  evaluator = run_evaluator(config)
  cold = _seconds(lambda: evaluator.evaluate(program, state, num_samples=num_samples))
  warm = [_seconds(lambda: evaluator.evaluate(program, state, num_samples=num_samples))
          for _ in range(FLAGS.repeats)]
  warm_seconds = statistics.median(warm)
  logging.info("Evaluation of %d samples: cold %.2f s, warm %.2f s", num_samples, cold,
               warm_seconds)
  rows.append([f"{FLAGS.train_steps} training steps", f"{train_seconds:.2f}", "1.00"])
  rows.append([f"evaluate {num_samples} samples, cold", f"{cold:.2f}",
               f"{cold / train_seconds:.2f}"])
  rows.append([f"evaluate {num_samples} samples, warm", f"{warm_seconds:.2f}",
               f"{warm_seconds / train_seconds:.2f}"])

  extractor, reference = evaluator.extractor, evaluator.reference
  images = np.random.default_rng(0).uniform(
      -1, 1, (num_samples, *extractor.image_shape)).astype(np.float32)

  def cnnjax_features_and_fid() -> float:
    features, _ = extractor.features_and_logits(images)
    return fid_from_stats(FeatureStats.from_features(features), reference.stats)

  variants = {"cnnjax": cnnjax_features_and_fid}
  if FLAGS.include_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(usable_cores())
    variants["torch"] = torch_features_and_fid(extractor, images, reference.stats)
  feature_times = {}
  for name, fn in variants.items():
    fn()
    feature_times[name] = statistics.median(_seconds(fn) for _ in range(FLAGS.repeats))
  feature_rows = [[name, f"{seconds:.3f}", f"{num_samples / seconds:,.0f}"]
                  for name, seconds in feature_times.items()]
  ratio = ""
  if "torch" in feature_times:
    ratio = (f"\ncnnjax / torch speed: "
             f"{feature_times['torch'] / feature_times['cnnjax']:.2f}x\n")

  report_text = "\n".join([
      *machine_lines((os.getloadavg()[0],), devices_used=jax.device_count()),
      f"- Command: `{command_line()}`",
      f"- Reference statistics loaded (cached) in {reference_seconds:.2f} s; training "
      f"compiled in {compile_seconds:.1f} s (not counted).",
      "", "Evaluation against training (ratio < 1: evaluation is faster):", "",
      markdown_table(["what", "seconds", "ratio to training"], rows), "",
      f"Features and FID of {num_samples} images (median of {FLAGS.repeats}):", "",
      markdown_table(["implementation", "seconds", "images/s"], feature_rows), ratio])
  print(report_text)  # The report is this script's output.
  if FLAGS.output:
    with open(FLAGS.output, "w", encoding="utf-8") as file:
      file.write(report_text)
    logging.info("Wrote %s", FLAGS.output)


if __name__ == "__main__":
  define_flags()
  app.run(main)
