r"""Times the full DCGAN training step (D and G update): cnnjax against PyTorch.

For each resolution and batch size, the default experiment (`configs/dcgan.py`: width
64, latent 100, Adam 2e-4) with 3 channels is trained on a fixed random batch by

* cnnjax, on one device (`jax.devices()[:1]`), with the default fast transposed
  convolution (`model.upsample="fast"`) and, with `--include_flax_upsample`, with
  `nn.ConvTranspose` (`"flax"`) to show what the fast layer buys;
* the identical PyTorch reference (`experiments.benchmarks.torch_dcgan`), in each of
  `--torch_memory_formats` and for each of `--torch_threads` (`torch.set_num_threads`;
  default: the usable cores).

cnnjax's step is compiled ahead of time (`.lower().compile()`), so compilation is
never timed. Each variant then runs `--warmup` untimed steps and `--repeats` timed
ones, interleaved round-robin between the variants (the order rotates every round) so
that all of them see the same load on a shared machine. The `nn.ConvTranspose`
variant, tens of seconds a step at 64x64 on a small CPU, gets no warm-up and only
`--flax_upsample_steps` timed steps. A step's time ends when its result is ready
(`jax.block_until_ready` on the state; a CUDA synchronize for PyTorch on a GPU). The
table reports the median as images/s and the ratio of cnnjax to the fastest PyTorch
variant (overall and, with several `--torch_threads`, per thread count).

Run from the repository root:

  python -m experiments.benchmarks.dcgan_step_bench --repeats=5 \
      --output=/tmp/dcgan_step_bench.md

On a GPU, jax (and PyTorch, if its build has CUDA) use it; nothing else changes.
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
from cnnjax.train.gan_program import build_gan_program  # noqa: E402
from cnnjax.train.validation import validate_gan_config  # noqa: E402
from experiments.benchmarks.timing import (Variant, ahead_of_time_step,  # noqa: E402
                                           command_line, define_torch_flags,
                                           machine_lines, markdown_table, random_images,
                                           time_interleaved, usable_cores)

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHANNELS = 3

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the benchmark's flags (only when run, so importing it defines none)."""
  config_flags.DEFINE_config_file(
      "config", os.path.join(_REPO_ROOT, "configs", "dcgan.py"),
      "Experiment config whose model and optimizer are benchmarked (image size and "
      "batch size are overridden by --resolutions and --batch_sizes).",
      lock_config=False)
  flags.DEFINE_list("resolutions", ["32", "64"], "Image sizes.")
  flags.DEFINE_list("batch_sizes", ["64", "128"], "Global batch sizes.")
  flags.DEFINE_integer("repeats", 5, "Timed steps per variant (the median counts).")
  flags.DEFINE_integer("warmup", 1,
                       "Untimed steps per variant before timing (after compilation).")
  flags.DEFINE_bool("include_flax_upsample", True,
                    "Also time cnnjax with model.upsample='flax' (nn.ConvTranspose).")
  flags.DEFINE_integer("flax_upsample_steps", 1,
                       "Timed steps (and no warm-up) of the slow model.upsample='flax'.")
  define_torch_flags(default_threads=["0"])


def cnnjax_config(base: ml_collections.ConfigDict, *, resolution: int, batch_size: int,
                  upsample: str) -> ml_collections.ConfigDict:
  """A copy of `base` at `resolution` and `batch_size` with `model.upsample`."""
  config = ml_collections.ConfigDict(base.to_dict())
  config.data.image_size = resolution
  config.train.batch_size = batch_size
  config.model.upsample = upsample
  config.lock()
  return config


def cnnjax_step_fn(config: ml_collections.ConfigDict, *, channels: int = CHANNELS,
                   seed: int = 0) -> tuple[Callable[[], None], Callable[[], Any]]:
  """cnnjax's jitted training step on one device, on a fixed random batch.

  Args:
    config: experiment config (`data.image_size`, `train.batch_size` and the model).
    channels: image channels.
    seed: seed of the random batch.

  Returns:
    `(step, get_state)`: `step()` runs one training step of the ahead-of-time
    compiled program and blocks until the new state is ready; `get_state()` returns
    the current state.
  """
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  validate_gan_config(config, num_devices=1)
  program = build_gan_program(config, mesh=mesh, channels=channels)
  size, batch_size = config.data.image_size, config.train.batch_size
  batch = parallel.put_global_batch(
      {"image": random_images(batch_size, size, channels, seed)}, mesh)
  return ahead_of_time_step(
      program.train_step, program.init_state(), batch,
      label=f"cnnjax {size}x{size} batch {batch_size} upsample={config.model.upsample}")


def torch_step_fn(config: ml_collections.ConfigDict, *, memory_format: str,
                  channels: int = CHANNELS, seed: int = 0) -> Callable[[], None]:
  """The PyTorch reference's training step on a fixed random batch (CUDA if available)."""
  import torch  # pylint: disable=g-import-not-at-top
  from experiments.benchmarks import torch_dcgan  # pylint: disable=g-import-not-at-top

  device = "cuda" if torch.cuda.is_available() else "cpu"
  size, batch_size = config.data.image_size, config.train.batch_size
  trainer = torch_dcgan.build_trainer(
      size, channels, latent_dim=config.model.latent_dim, g_width=config.model.g_width,
      d_width=config.model.d_width, learning_rate=config.optim.g_lr, b1=config.optim.b1,
      b2=config.optim.b2, memory_format=memory_format, device=device, seed=seed)
  if config.optim.d_lr != config.optim.g_lr:
    for group in trainer.d_optimizer.param_groups:
      group["lr"] = config.optim.d_lr
  real = trainer.prepare_images(random_images(batch_size, size, channels, seed))

  def step() -> None:
    trainer.train_step(real)
    if device == "cuda":
      torch.cuda.synchronize()

  return step


def run_size(base: ml_collections.ConfigDict, resolution: int, batch_size: int, *,
             repeats: int, warmup: int, flax_upsample_steps: int,
             torch_formats: Sequence[str], torch_threads: Sequence[int]
             ) -> list[Variant]:
  """Builds, warms up and times every variant at one size, interleaved.

  Args:
    base: the experiment config.
    resolution, batch_size: the size to time.
    repeats: timed steps per variant.
    warmup: untimed steps per variant first.
    flax_upsample_steps: timed steps of cnnjax with `nn.ConvTranspose` (0: skip it).
    torch_formats: PyTorch memory formats to time (empty: skip PyTorch).
    torch_threads: PyTorch intra-op thread counts to time, each with every format.

  Returns:
    The timed variants.
  """
  variants = []
  config = cnnjax_config(base, resolution=resolution, batch_size=batch_size,
                         upsample="fast")
  variants.append(Variant("cnnjax fast", batch_size, cnnjax_step_fn(config)[0]))
  if flax_upsample_steps > 0:
    config = cnnjax_config(base, resolution=resolution, batch_size=batch_size,
                           upsample="flax")
    variants.append(Variant("cnnjax flax", batch_size, cnnjax_step_fn(config)[0],
                            max_steps=flax_upsample_steps, warmup_steps=0))
  torch_config = cnnjax_config(base, resolution=resolution, batch_size=batch_size,
                               upsample="fast")
  for threads in torch_threads:
    for memory_format in torch_formats:
      import torch  # pylint: disable=g-import-not-at-top
      variants.append(Variant(
          f"torch {memory_format} {threads}t", batch_size,
          torch_step_fn(torch_config, memory_format=memory_format),
          prepare=functools.partial(torch.set_num_threads, threads)))
  time_interleaved(variants, repeats=repeats, warmup=warmup,
                   label=f"{resolution}x{resolution} batch {batch_size},")
  return variants


def report(results: dict[tuple[int, int], list[Variant]], *, repeats: int,
           warmup: int, flax_upsample_steps: int,
           load_averages: Sequence[float] = ()) -> str:
  """The markdown report: context, images/s table and step-time details.

  Args:
    results: the timed variants of each (resolution, batch size).
    repeats, warmup, flax_upsample_steps: the benchmark's settings, for the record.
    load_averages: the machine's 1-minute load average at the start and end.

  Returns:
    Markdown text.
  """
  names = [variant.name for variant in next(iter(results.values()))]
  torch_names = [name for name in names if name.startswith("torch")]
  # Thread-count suffixes ("2t") of the PyTorch variants, in order.
  thread_groups = list(dict.fromkeys(name.rsplit(" ", 1)[1] for name in torch_names))
  header = ["resolution", "batch"] + [f"{name} (img/s)" for name in names]
  if torch_names:
    header.append("cnnjax fast / best torch")
    if len(thread_groups) > 1:
      header += [f"cnnjax fast / best torch {group}" for group in thread_groups]
    if "cnnjax flax" in names:
      header.append("cnnjax flax / best torch")
  rows, details = [], []
  for (resolution, batch_size), variants in results.items():
    by_name = {variant.name: variant for variant in variants}
    row = [f"{resolution}x{resolution}", str(batch_size)]
    row += [f"{by_name[name].images_per_second:.1f}" for name in names]
    if torch_names:
      fast = by_name["cnnjax fast"].images_per_second
      best = max(by_name[name].images_per_second for name in torch_names)
      row.append(f"{fast / best:.2f}x")
      if len(thread_groups) > 1:
        for group in thread_groups:
          best_in_group = max(by_name[name].images_per_second for name in torch_names
                              if name.endswith(" " + group))
          row.append(f"{fast / best_in_group:.2f}x")
      if "cnnjax flax" in by_name:
        row.append(f"{by_name['cnnjax flax'].images_per_second / best:.2f}x")
    rows.append(row)
    details.append([f"{resolution}x{resolution}", str(batch_size)] + [
        f"{1e3 * by_name[name].median_seconds:.0f} "
        f"({1e3 * min(by_name[name].times):.0f}-{1e3 * max(by_name[name].times):.0f})"
        for name in names])
  lines = [
      *machine_lines(load_averages),
      "- PyTorch: `torch <memory format> <N>t` ran with torch.set_num_threads(N); Adam "
      "fused where supported; the discriminator's weights are frozen during the "
      "generator's backward pass (as in cnnjax).",
      f"- Method: full training steps (D and G update) on a fixed batch; cnnjax "
      f"compiled ahead of time (never timed); {warmup} untimed warm-up step(s), then the "
      f"median of {repeats} timed steps per variant, variants interleaved round-robin"
      + (f"; `cnnjax flax` (nn.ConvTranspose): no warm-up, {flax_upsample_steps} timed "
         "step(s)" if any(v.name == "cnnjax flax" for v in results[next(iter(results))])
         else "") + ".",
      f"- Command: `{command_line()}`",
      "",
      "Images per second (higher is better):",
      "",
      markdown_table(header, rows),
      "",
      "Milliseconds per step, median (min-max):",
      "",
      markdown_table(["resolution", "batch"] + names, details),
      "",
  ]
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  torch_formats = FLAGS.torch_memory_formats if FLAGS.include_torch else []
  torch_threads = [int(n) or usable_cores() for n in FLAGS.torch_threads]
  load_averages = [os.getloadavg()[0]]
  logging.info("jax devices: %s", jax.devices())
  results = {}
  for resolution in map(int, FLAGS.resolutions):
    for batch_size in map(int, FLAGS.batch_sizes):
      results[(resolution, batch_size)] = run_size(
          FLAGS.config, resolution, batch_size, repeats=FLAGS.repeats,
          warmup=FLAGS.warmup, torch_formats=torch_formats,
          torch_threads=torch_threads,
          flax_upsample_steps=(FLAGS.flax_upsample_steps
                               if FLAGS.include_flax_upsample else 0))
  text = report(results, repeats=FLAGS.repeats, warmup=FLAGS.warmup,
                flax_upsample_steps=FLAGS.flax_upsample_steps,
                load_averages=load_averages + [os.getloadavg()[0]])
  print(text)
  if FLAGS.output:
    with open(FLAGS.output, "w", encoding="utf-8") as output:
      output.write(text)
    logging.info("Wrote %s", FLAGS.output)


if __name__ == "__main__":
  define_flags()
  app.run(main)
