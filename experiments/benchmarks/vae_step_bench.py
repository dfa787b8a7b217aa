r"""Times the VAE training step: cnnjax against an identical PyTorch VAE.

For each batch size, the VAE of `configs/vae.py` (28x28 grey digits, latent 16,
widths 32, dynamically binarised Bernoulli likelihood, Adam 1e-3) is trained on a fixed
random batch by

* cnnjax, on one device (`jax.devices()[:1]`): `build_vae_program`'s data-parallel
  `train_step` with the default fast transposed convolution;
* the identical PyTorch reference (`experiments.benchmarks.torch_vae`), in each of
  `--torch_memory_formats` and for each of `--torch_threads`.

The method is `dcgan_step_bench`'s (`experiments.benchmarks.timing`): cnnjax compiled ahead
of time and never timed, `--warmup` untimed steps, then `--repeats` timed steps per
variant, interleaved round-robin, reported as the median in images/s with the ratio of
cnnjax to the fastest PyTorch variant. Run from the repository root:

  python -m experiments.benchmarks.vae_step_bench --repeats=21 \
      --output=/tmp/vae_step_bench.md
"""

import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

if __package__ in (None, ""):  # Run as a file: make the repository importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))

from absl import app, flags, logging  # noqa: E402
import jax  # noqa: E402
import ml_collections  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cnnjax.train import parallel  # noqa: E402
from cnnjax.train.vae_validation import validate_vae_config  # noqa: E402
from cnnjax.train.vae_program import build_vae_program  # noqa: E402
from experiments.benchmarks.timing import (Variant, ahead_of_time_step,  # noqa: E402
                                           command_line, define_torch_flags,
                                           machine_lines, markdown_table, random_images,
                                           time_interleaved, usable_cores)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHANNELS = 1

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the benchmark's flags (only when run, so importing it defines none)."""
  config_flags.DEFINE_config_file(
      "config", os.path.join(_REPO_ROOT, "configs", "vae.py"),
      "VAE config whose model and optimizer are benchmarked (the batch size is "
      "overridden by --batch_sizes).", lock_config=False)
  flags.DEFINE_list("batch_sizes", ["64", "128", "256"], "Global batch sizes.")
  flags.DEFINE_integer("repeats", 15, "Timed steps per variant (the median counts).")
  flags.DEFINE_integer("warmup", 3,
                       "Untimed steps per variant before timing (after compilation).")
  define_torch_flags(default_threads=["0", "1"])


def cnnjax_config(base: ml_collections.ConfigDict, *, batch_size: int
                  ) -> ml_collections.ConfigDict:
  """A copy of `base` at `batch_size`, without the periodic held-out ELBO."""
  config = ml_collections.ConfigDict(base.to_dict())
  config.train.batch_size = batch_size
  config.eval.elbo_every = 0
  config.lock()
  return config


def cnnjax_step_fn(config: ml_collections.ConfigDict, *, channels: int = CHANNELS,
                   seed: int = 0) -> tuple[Callable[[], None], Callable[[], Any]]:
  """cnnjax's jitted VAE training step on one device, on a fixed random batch.

  Returns:
    `(step, get_state)`: `step()` runs one training step of the ahead-of-time
    compiled program and blocks until the new state is ready; `get_state()` returns
    the current state.
  """
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  validate_vae_config(config, num_devices=1)
  program = build_vae_program(config, mesh=mesh, channels=channels)
  size, batch_size = config.data.image_size, config.train.batch_size
  batch = parallel.put_global_batch(
      {"image": random_images(batch_size, size, channels, seed)}, mesh)
  return ahead_of_time_step(program.train_step, program.init_state(), batch,
                            label=f"cnnjax VAE batch {batch_size}")


def torch_step_fn(config: ml_collections.ConfigDict, *, memory_format: str,
                  channels: int = CHANNELS, seed: int = 0) -> Callable[[], None]:
  """The PyTorch reference's VAE step on a fixed random batch (CUDA if available)."""
  import torch  # pylint: disable=g-import-not-at-top
  from experiments.benchmarks import torch_vae  # pylint: disable=g-import-not-at-top

  device = "cuda" if torch.cuda.is_available() else "cpu"
  size, batch_size = config.data.image_size, config.train.batch_size
  trainer = torch_vae.build_trainer(
      size, channels, latent_dim=config.model.latent_dim,
      encoder_width=config.model.encoder_width, decoder_width=config.model.decoder_width,
      learning_rate=config.optim.lr, b1=config.optim.b1, b2=config.optim.b2,
      memory_format=memory_format, device=device, seed=seed)
  images = trainer.prepare_images(random_images(batch_size, size, channels, seed))

  def step() -> None:
    trainer.train_step(images)
    if device == "cuda":
      torch.cuda.synchronize()

  return step


def run_batch_size(base: ml_collections.ConfigDict, batch_size: int, *, repeats: int,
                   warmup: int, torch_formats: Sequence[str],
                   torch_threads: Sequence[int]) -> list[Variant]:
  """Builds, warms up and times every variant at one batch size, interleaved."""
  config = cnnjax_config(base, batch_size=batch_size)
  variants = [Variant("cnnjax", batch_size, cnnjax_step_fn(config)[0])]
  for threads in torch_threads:
    for memory_format in torch_formats:
      import torch  # pylint: disable=g-import-not-at-top
      variants.append(Variant(
          f"torch {memory_format} {threads}t", batch_size,
          torch_step_fn(config, memory_format=memory_format),
          prepare=functools.partial(torch.set_num_threads, threads)))
  time_interleaved(variants, repeats=repeats, warmup=warmup,
                   label=f"batch {batch_size},")
  return variants


def report(config: ml_collections.ConfigDict, results: dict[int, list[Variant]], *,
           repeats: int, warmup: int, load_averages: Sequence[float] = ()) -> str:
  """The markdown report: context, images/s table and step-time details."""
  names = [variant.name for variant in next(iter(results.values()))]
  torch_names = [name for name in names if name.startswith("torch")]
  size = config.data.image_size
  header = ["image", "batch"] + [f"{name} (img/s)" for name in names]
  if torch_names:
    header.append("cnnjax / best torch")
  rows, details = [], []
  for batch_size, variants in results.items():
    by_name = {variant.name: variant for variant in variants}
    row = [f"{size}x{size}x{CHANNELS}", str(batch_size)]
    row += [f"{by_name[name].images_per_second:.0f}" for name in names]
    if torch_names:
      best = max(by_name[name].images_per_second for name in torch_names)
      row.append(f"{by_name['cnnjax'].images_per_second / best:.2f}x")
    rows.append(row)
    details.append([f"{size}x{size}x{CHANNELS}", str(batch_size)] + [
        f"{1e3 * by_name[name].median_seconds:.1f} "
        f"({1e3 * min(by_name[name].times):.1f}-{1e3 * max(by_name[name].times):.1f})"
        for name in names])
  model = config.model
  lines = [
      *machine_lines(load_averages),
      f"- Model: configs/vae.py, latent {model.latent_dim}, encoder width "
      f"{model.encoder_width}, decoder width {model.decoder_width}, upsample "
      f"{model.upsample!r}, {config.likelihood.name} likelihood; Adam {config.optim.lr}.",
      f"- Method: full training steps on a fixed batch; cnnjax compiled ahead of time "
      f"(never timed); {warmup} untimed warm-up steps, then the median of {repeats} timed "
      "steps per variant, variants interleaved round-robin; `torch <format> <N>t` ran "
      "with torch.set_num_threads(N).",
      f"- Command: `{command_line()}`",
      "",
      "Images per second (higher is better):",
      "",
      markdown_table(header, rows),
      "",
      "Milliseconds per step, median (min-max):",
      "",
      markdown_table(["image", "batch"] + names, details),
      "",
  ]
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  torch_formats = FLAGS.torch_memory_formats if FLAGS.include_torch else []
  torch_threads = [int(n) or usable_cores() for n in FLAGS.torch_threads]
  load_averages = [os.getloadavg()[0]]
  results = {batch_size: run_batch_size(
      FLAGS.config, batch_size, repeats=FLAGS.repeats, warmup=FLAGS.warmup,
      torch_formats=torch_formats, torch_threads=torch_threads)
             for batch_size in map(int, FLAGS.batch_sizes)}
  text = report(FLAGS.config, results, repeats=FLAGS.repeats, warmup=FLAGS.warmup,
                load_averages=load_averages + [os.getloadavg()[0]])
  logging.info("VAE step benchmark:\n%s", text)
  if FLAGS.output:
    with open(FLAGS.output, "w", encoding="utf-8") as output:
      output.write(text)
    logging.info("Wrote %s", FLAGS.output)


if __name__ == "__main__":
  define_flags()
  app.run(main)
