r"""Times a WGAN-GP training step with and without `cnnjax.models.fast_conv`.

The gradient penalty back-propagates ||dD/dx|| into D's weights, which differentiates
the input gradient of every strided convolution in its kernel: on CPU, XLA does that
pathologically slowly unless D's convolutions are `strided_conv` (the default). This
times the full GAN step (D with the penalty, then G) of `configs/dcgan.py` with
`--loss` (default: WGAN-GP, lambda 10, LayerNorm critic), both ways, interleaved:

  python -m experiments.benchmarks.penalty_bench --repeats=7 --output=/tmp/penalty.md
"""

import os
import sys
from collections.abc import Sequence

if __package__ in (None, ""):  # Run as a file: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))

from absl import app, flags, logging  # noqa: E402
from jax import lax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

import cnnjax.models.dcgan as dcgan_module  # noqa: E402
from experiments.benchmarks import dcgan_step_bench  # noqa: E402
from experiments.benchmarks.timing import (Variant, command_line,  # noqa: E402
                                           machine_lines, markdown_table,
                                           time_interleaved)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file(
      "config", os.path.join(_REPO_ROOT, "configs", "dcgan.py"),
      "GAN config (its loss section is overridden by the flags below).",
      lock_config=False)
  flags.DEFINE_string("loss", "wasserstein", "loss.name.")
  flags.DEFINE_float("gp_weight", 10.0, "loss.gp_weight (WGAN-GP's lambda).")
  flags.DEFINE_float("r1_weight", 0.0, "loss.r1_weight (R1's gamma).")
  flags.DEFINE_string("d_norm", "layer", "model.d_norm.")
  flags.DEFINE_integer("resolution", 28, "Image size.")
  flags.DEFINE_integer("batch_size", 64, "Global batch size.")
  flags.DEFINE_integer("channels", 1, "Image channels.")
  flags.DEFINE_integer("repeats", 7, "Timed steps per variant (the median counts).")
  flags.DEFINE_integer("warmup", 2, "Untimed steps per variant after compilation.")
  flags.DEFINE_string("output", "", "Markdown file to write the report into.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  config = dcgan_step_bench.cnnjax_config(
      FLAGS.config, resolution=FLAGS.resolution, batch_size=FLAGS.batch_size,
      upsample="fast")
  config.unlock()
  config.loss.name, config.loss.gp_weight = FLAGS.loss, FLAGS.gp_weight
  config.loss.r1_weight, config.model.d_norm = FLAGS.r1_weight, FLAGS.d_norm
  config.lock()
  variants = [Variant("strided_conv (default)", FLAGS.batch_size,
                      dcgan_step_bench.cnnjax_step_fn(config, channels=FLAGS.channels)[0])]
  fast = dcgan_module.strided_conv
  try:  # The discriminator looks the convolution up when it is traced.
    dcgan_module.strided_conv = lax.conv_general_dilated
    variants.append(Variant("lax.conv_general_dilated", FLAGS.batch_size,
                            dcgan_step_bench.cnnjax_step_fn(
                                config, channels=FLAGS.channels)[0]))
  finally:
    dcgan_module.strided_conv = fast
  load = [os.getloadavg()[0]]
  time_interleaved(variants, repeats=FLAGS.repeats, warmup=FLAGS.warmup)
  rows = [[variant.name, f"{1e3 * variant.median_seconds:.0f}",
           f"{variant.images_per_second:.0f}"] for variant in variants]
  speedup = variants[1].median_seconds / variants[0].median_seconds
  text = "\n".join([
      *machine_lines(load + [os.getloadavg()[0]]),
      f"- Step: configs/dcgan.py at {FLAGS.resolution}x{FLAGS.resolution}x"
      f"{FLAGS.channels}, batch {FLAGS.batch_size}, loss {FLAGS.loss}, gp_weight "
      f"{FLAGS.gp_weight}, r1_weight {FLAGS.r1_weight}, d_norm {FLAGS.d_norm}; median of "
      f"{FLAGS.repeats} steps after {FLAGS.warmup} warm-up steps, interleaved.",
      f"- Command: `{command_line()}`", "",
      markdown_table(["discriminator convolution", "ms per step", "images/s"], rows), "",
      f"strided_conv speed-up: {speedup:.2f}x", ""])
  logging.info("Penalty benchmark:\n%s", text)
  if FLAGS.output:
    with open(FLAGS.output, "w", encoding="utf-8") as output:
      output.write(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
