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

import dataclasses
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

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
from experiments.benchmarks.flops import peak_flops, torch_flops, xla_flops  # noqa: E402
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
  flags.DEFINE_list("precisions", ["float32"],
                    "Compute dtypes to time: float32 and/or bfloat16 (cnnjax's "
                    "model.dtype; PyTorch's autocast).")
  flags.register_validator(
      "precisions", lambda values: set(values) <= set(PRECISION_SUFFIXES),
      message=f"use {' and/or '.join(PRECISION_SUFFIXES)}, comma-separated.")
  flags.DEFINE_bool("report_flops", True,
                    "Report achieved TFLOP/s and the fraction of the device's peak.")
  define_torch_flags(default_threads=["0"])


PRECISION_SUFFIXES = {"float32": "", "bfloat16": " bf16"}


def cnnjax_config(base: ml_collections.ConfigDict, *, resolution: int, batch_size: int,
                  upsample: str, precision: str = "float32") -> ml_collections.ConfigDict:
  """A copy of `base` at `resolution` and `batch_size`, with `model.upsample` and the
  compute dtype `precision` (`model.dtype`)."""
  config = ml_collections.ConfigDict(base.to_dict())
  config.data.image_size = resolution
  config.train.batch_size = batch_size
  config.model.upsample = upsample
  config.model.dtype = precision
  config.lock()
  return config


class CnnjaxStep(NamedTuple):
  """cnnjax's compiled step on a fixed batch.

  Attributes:
    step: runs one training step and blocks until the new state is ready.
    get_state: returns the current state.
    xla_flops: the step's FLOPs by XLA's cost analysis.
  """
  step: Callable[[], None]
  get_state: Callable[[], Any]
  xla_flops: float


def cnnjax_step_fn(config: ml_collections.ConfigDict, *, channels: int = CHANNELS,
                   seed: int = 0) -> CnnjaxStep:
  """cnnjax's jitted training step on one device, on a fixed random batch.

  Args:
    config: experiment config (`data.image_size`, `train.batch_size` and the model).
    channels: image channels.
    seed: seed of the random batch.

  Returns:
    The ahead-of-time compiled step (`CnnjaxStep`).
  """
  mesh = parallel.make_data_mesh(jax.devices()[:1])
  validate_gan_config(config, num_devices=1)
  program = build_gan_program(config, mesh=mesh, channels=channels)
  size, batch_size = config.data.image_size, config.train.batch_size
  batch = parallel.put_global_batch(
      {"image": random_images(batch_size, size, channels, seed)}, mesh)
  state = program.init_state()
  lowered = program.train_step.lower(state, batch)
  step, get_state = ahead_of_time_step(
      program.train_step, state, batch, lowered=lowered,
      label=f"cnnjax {size}x{size} batch {batch_size} upsample={config.model.upsample} "
      f"dtype={config.model.dtype}")
  return CnnjaxStep(step, get_state, xla_flops(lowered))


def torch_step_fn(config: ml_collections.ConfigDict, *, memory_format: str,
                  channels: int = CHANNELS, seed: int = 0) -> Callable[[], None]:
  """The PyTorch reference's training step on a fixed random batch (CUDA if available),
  in `config.model.dtype` (bfloat16: autocast)."""
  import torch  # pylint: disable=g-import-not-at-top
  from experiments.benchmarks import torch_dcgan  # pylint: disable=g-import-not-at-top

  device = "cuda" if torch.cuda.is_available() else "cpu"
  size, batch_size = config.data.image_size, config.train.batch_size
  trainer = torch_dcgan.build_trainer(
      size, channels, latent_dim=config.model.latent_dim, g_width=config.model.g_width,
      d_width=config.model.d_width, learning_rate=config.optim.g_lr, b1=config.optim.b1,
      b2=config.optim.b2, memory_format=memory_format, device=device, seed=seed,
      precision=config.model.dtype)
  if config.optim.d_lr != config.optim.g_lr:
    for group in trainer.d_optimizer.param_groups:
      group["lr"] = config.optim.d_lr
  real = trainer.prepare_images(random_images(batch_size, size, channels, seed))

  def step() -> None:
    trainer.train_step(real)
    if device == "cuda":
      torch.cuda.synchronize()

  return step


@dataclasses.dataclass
class SizeResult:
  """The timed variants of one (resolution, batch size) and the step's model FLOPs.

  Attributes:
    variants: the timed variants.
    xla_flops: FLOPs of cnnjax's step by XLA's cost analysis (of its float32 program).
    torch_flops: FLOPs of the PyTorch step by `FlopCounterMode` (0: not counted).
  """
  variants: list[Variant]
  xla_flops: float
  torch_flops: float = 0.0

  @property
  def model_flops(self) -> float:
    """The step's model FLOPs: PyTorch's count where taken, else XLA's."""
    return self.torch_flops or self.xla_flops


def run_size(base: ml_collections.ConfigDict, resolution: int, batch_size: int, *,
             repeats: int, warmup: int, flax_upsample_steps: int,
             torch_formats: Sequence[str], torch_threads: Sequence[int],
             precisions: Sequence[str] = ("float32",)) -> SizeResult:
  """Builds, warms up and times every variant at one size, interleaved.

  Args:
    base: the experiment config.
    resolution, batch_size: the size to time.
    repeats: timed steps per variant.
    warmup: untimed steps per variant first.
    flax_upsample_steps: timed steps of cnnjax with `nn.ConvTranspose` (0: skip it;
      float32 only).
    torch_formats: PyTorch memory formats to time (empty: skip PyTorch).
    torch_threads: PyTorch intra-op thread counts to time, each with every format.
    precisions: compute dtypes; every variant but `cnnjax flax` runs in each
      (names get `PRECISION_SUFFIXES`).

  Returns:
    The timed variants and the step's model FLOPs.
  """
  variants, step_flops, counted_torch_flops = [], 0.0, 0.0
  for precision in precisions:
    suffix = PRECISION_SUFFIXES[precision]
    config = cnnjax_config(base, resolution=resolution, batch_size=batch_size,
                           upsample="fast", precision=precision)
    cnnjax_step = cnnjax_step_fn(config)
    step_flops = step_flops or cnnjax_step.xla_flops
    variants.append(Variant("cnnjax fast" + suffix, batch_size, cnnjax_step.step))
    if flax_upsample_steps > 0 and precision == "float32":
      config = cnnjax_config(base, resolution=resolution, batch_size=batch_size,
                             upsample="flax")
      variants.append(Variant("cnnjax flax", batch_size, cnnjax_step_fn(config).step,
                              max_steps=flax_upsample_steps, warmup_steps=0))
    torch_config = cnnjax_config(base, resolution=resolution, batch_size=batch_size,
                                 upsample="fast", precision=precision)
    for threads in torch_threads:
      for memory_format in torch_formats:
        import torch  # pylint: disable=g-import-not-at-top
        step = torch_step_fn(torch_config, memory_format=memory_format)
        if not counted_torch_flops:  # The counted step doubles as a warm-up step.
          torch.set_num_threads(threads)
          counted_torch_flops = torch_flops(step)
        variants.append(Variant(
            f"torch {memory_format} {threads}t{suffix}", batch_size, step,
            prepare=functools.partial(torch.set_num_threads, threads)))
  time_interleaved(variants, repeats=repeats, warmup=warmup,
                   label=f"{resolution}x{resolution} batch {batch_size},")
  return SizeResult(variants, step_flops, counted_torch_flops)


def _precision_of(name: str) -> str:
  for precision, suffix in PRECISION_SUFFIXES.items():
    if suffix and name.endswith(suffix):
      return precision
  return "float32"


def _without_precision(name: str) -> str:
  suffix = PRECISION_SUFFIXES[_precision_of(name)]
  return name[:-len(suffix)] if suffix else name


def report(results: dict[tuple[int, int], SizeResult], *, repeats: int,
           warmup: int, flax_upsample_steps: int,
           load_averages: Sequence[float] = (),
           peaks: dict[str, tuple[float, str]] | None = None) -> str:
  """The markdown report: context, images/s table, step times and FLOP/s.

  Args:
    results: the timed variants and model FLOPs of each (resolution, batch size).
    repeats, warmup, flax_upsample_steps: the benchmark's settings, for the record.
    load_averages: the machine's 1-minute load average at the start and end.
    peaks: precision -> (peak FLOP/s, its source), for the fraction of peak (None:
      no FLOP/s table).

  Returns:
    Markdown text.
  """
  first = next(iter(results.values())).variants
  names = [variant.name for variant in first]
  precisions = list(dict.fromkeys(_precision_of(name) for name in names))
  torch_names = [name for name in names if name.startswith("torch")]
  # Thread-count suffixes ("2t") of the PyTorch variants, in order.
  thread_groups = list(dict.fromkeys(
      _without_precision(name).rsplit(" ", 1)[1] for name in torch_names))
  # (column, cnnjax variant, the PyTorch variants it is compared with).
  ratios = []
  if torch_names:
    for precision in precisions:
      suffix = PRECISION_SUFFIXES[precision]
      same = [name for name in torch_names if _precision_of(name) == precision]
      ratios.append((f"cnnjax fast{suffix} / best torch{suffix}", "cnnjax fast" + suffix,
                     same))
      if len(thread_groups) > 1:
        ratios += [(f"cnnjax fast{suffix} / best torch {group}{suffix}",
                    "cnnjax fast" + suffix,
                    [name for name in same
                     if _without_precision(name).endswith(" " + group)])
                   for group in thread_groups]
    if "cnnjax flax" in names:
      ratios.append(("cnnjax flax / best torch", "cnnjax flax",
                     [name for name in torch_names if _precision_of(name) == "float32"]))
  header = (["resolution", "batch"] + [f"{name} (img/s)" for name in names]
            + [column for column, _, _ in ratios])
  rows, details, throughput = [], [], []
  for (resolution, batch_size), result in results.items():
    by_name = {variant.name: variant for variant in result.variants}
    speed = {name: variant.images_per_second for name, variant in by_name.items()}
    size = [f"{resolution}x{resolution}", str(batch_size)]
    rows.append(size + [f"{speed[name]:.1f}" for name in names] + [
        f"{speed[ours] / max(speed[name] for name in theirs):.2f}x"
        for _, ours, theirs in ratios])
    details.append(size + [
        f"{1e3 * by_name[name].median_seconds:.0f} "
        f"({1e3 * min(by_name[name].times):.0f}-{1e3 * max(by_name[name].times):.0f})"
        for name in names])
    if peaks:
      cells = []
      for name in names:
        achieved = result.model_flops / by_name[name].median_seconds
        peak = peaks[_precision_of(name)][0]
        cells.append(f"{achieved / 1e12:.3f} ({100 * achieved / peak:.0f}%)")
      torch_count = f"{result.torch_flops / 1e9:.1f}" if result.torch_flops else "-"
      throughput.append(size + [torch_count, f"{result.xla_flops / 1e9:.1f}"] + cells)
  flax_note = (f"; `cnnjax flax` (nn.ConvTranspose): no warm-up, {flax_upsample_steps} "
               "timed step(s)" if "cnnjax flax" in names else "")
  lines = [
      *machine_lines(load_averages),
      "- PyTorch: `torch <memory format> <N>t` ran with torch.set_num_threads(N); Adam "
      "fused where supported; the discriminator's weights are frozen during the "
      "generator's backward pass (as in cnnjax)"
      + ('; ` bf16` variants: cnnjax with `model.dtype="bfloat16"`, PyTorch under '
         "bfloat16 `torch.autocast`, both with float32 weights and optimizer state"
         if "bfloat16" in precisions else "") + ".",
      f"- Method: full training steps (D and G update) on a fixed batch; cnnjax "
      f"compiled ahead of time (never timed); {warmup} untimed warm-up step(s), then the "
      f"median of {repeats} timed steps per variant, variants interleaved "
      f"round-robin{flax_note}.",
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
  if peaks:
    lines += [
        "Achieved TFLOP/s and fraction of peak. Model FLOPs per step: PyTorch's "
        "`FlopCounterMode` count of the reference step (convolutions and matmuls over "
        "whole windows, the usual analytic count; XLA's cost analysis of cnnjax's "
        "float32 step where PyTorch is absent), the same for every variant as the model "
        "is; XLA's count, which follows cnnjax's implementation (space-to-depth "
        "convolutions on CPU compute some zeros), beside it. Peaks:",
        "",
        *[f"- {precision}: {peak / 1e12:.3f} TFLOP/s, {source}"
          for precision, (peak, source) in peaks.items()],
        "",
        markdown_table(["resolution", "batch", "model GFLOP/step (PyTorch count)",
                        "GFLOP/step (XLA cost analysis)"]
                       + [f"{name} TFLOP/s (% of peak)" for name in names], throughput),
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
          torch_threads=torch_threads, precisions=FLAGS.precisions,
          flax_upsample_steps=(FLAGS.flax_upsample_steps
                               if FLAGS.include_flax_upsample else 0))
  load_averages.append(os.getloadavg()[0])
  # Measured after the timing, so the peak's matrix multiplications disturb nothing.
  peaks = ({precision: peak_flops(precision) for precision in FLAGS.precisions}
           if FLAGS.report_flops else None)
  text = report(results, repeats=FLAGS.repeats, warmup=FLAGS.warmup,
                flax_upsample_steps=FLAGS.flax_upsample_steps,
                load_averages=load_averages, peaks=peaks)
  print(text)
  if FLAGS.output:
    with open(FLAGS.output, "w", encoding="utf-8") as output:
      output.write(text)
    logging.info("Wrote %s", FLAGS.output)


if __name__ == "__main__":
  define_flags()
  app.run(main)
