r"""Times S seeds of one GAN trained as one vmapped program against S sequential runs.

For each model size (`--widths`: generator and discriminator widths) and number of
seeds (`--num_seeds`), on a fixed random batch per seed:

* sequential: the plain jitted data-parallel step (`GanProgram.train_step`), once per
  seed's state, one after the other, as S separate runs would;
* vmapped: the same step vmapped over the S stacked states
  (`cnnjax.sweeps.vmap_seeds.make_vmapped_train_step`), one call for all seeds, as a
  sweep with `vmap_seeds=True` runs it.

Both are compiled ahead of time (never timed). A round is S sequential steps or one
vmapped step, ending when the states are ready; after `--warmup` untimed rounds the
two alternate for `--repeats` timed rounds each, so both see the same load on a shared
machine. The table gives the median seconds of a round, seed-steps per second and the
speed-up (sequential time / vmapped time). Small models gain the most: one step leaves
the device mostly idle, and the vmapped program fills it.

Run from the repository root (on one device of whatever jax sees):

  python -m experiments.benchmarks.vmap_seeds_bench --num_seeds=1,2,4,8 \
      --widths=8,64 --output=/tmp/vmap_seeds_bench.md

Recorded on the project's 2-core CPU machine (shared with other jobs; XLA:CPU, one
device; DCGAN 28x28x1, batch 64 per seed; `--num_seeds=1,4,8 --widths=8,32 --repeats=5`):

  | width | seeds | sequential s/round | vmapped s/round | speed-up |
  | 8     | 1     | 0.0154             | 0.0134          | 1.15x    |
  | 8     | 4     | 0.0621             | 0.1740          | 0.36x    |
  | 8     | 8     | 0.1823             | 0.5571          | 0.33x    |
  | 32    | 1     | 0.0690             | 0.0718          | 0.96x    |
  | 32    | 4     | 0.4160             | 1.0049          | 0.41x    |
  | 32    | 8     | 0.8320             | 2.1998          | 0.38x    |

On CPU, vectorising seeds loses: vmapping a convolution over per-seed kernels turns it
into a grouped convolution, which XLA:CPU runs about 3x slower than the separate ones,
and a CPU is already busy with one small model. The case it is for, a small model on an
idle GPU or TPU, has not been measured yet: run this script there.
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

from cnnjax.sweeps.vmap_seeds import (make_vmapped_train_step, put_seed_batches,  # noqa: E402
                                      stack_trees, with_seed)
from cnnjax.train import parallel  # noqa: E402
from cnnjax.train.gan_program import build_gan_program  # noqa: E402
from cnnjax.train.validation import validate_gan_config  # noqa: E402
from experiments.benchmarks.timing import command_line, machine_lines  # noqa: E402

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the benchmark's flags (only when run, so importing it defines none)."""
  config_flags.DEFINE_config_file(
      "config", os.path.join(_REPO_ROOT, "configs", "dcgan.py"),
      "GAN config whose model, optimizer, image size and batch size are benchmarked "
      "(widths come from --widths).", lock_config=False)
  flags.DEFINE_list("num_seeds", ["1", "2", "4", "8"], "Seeds per round.")
  flags.DEFINE_list("widths", ["16", "64"], "model.g_width = model.d_width values.")
  flags.DEFINE_integer("channels", 1, "Image channels.")
  flags.DEFINE_integer("num_devices", 1, "Data-parallel devices of each program.")
  flags.DEFINE_integer("repeats", 5, "Timed rounds per variant (the median counts).")
  flags.DEFINE_integer("warmup", 1, "Untimed rounds per variant after compilation.")
  flags.DEFINE_string("output", "", "Markdown file to write the report into.")


def _config(base: ml_collections.ConfigDict, width: int) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(base.to_dict())
  config.model.g_width = width
  config.model.d_width = width
  config.lock()
  return config


def make_rounds(config: ml_collections.ConfigDict, num_seeds: int, mesh, channels: int
                ) -> tuple[Callable[[], None], Callable[[], None]]:
  """(sequential round, vmapped round) over `num_seeds` seeds, compiled ahead of time."""
  validate_gan_config(config, mesh.size)
  programs = [build_gan_program(with_seed(config, seed), mesh=mesh, channels=channels)
              for seed in range(num_seeds)]
  size, batch_size = config.data.image_size, config.train.batch_size
  rng = np.random.default_rng(0)
  host_batches = [{"image": rng.uniform(-1, 1, (batch_size, size, size, channels)
                                        ).astype(np.float32)} for _ in range(num_seeds)]
  batches = [parallel.put_global_batch(batch, mesh) for batch in host_batches]
  states = [jax.block_until_ready(program.init_state()) for program in programs]
  stacked_batch = put_seed_batches(host_batches, mesh)
  stacked = {"state": jax.block_until_ready(parallel.put_replicated(
      stack_trees([program.init_state() for program in programs]), mesh))}
  start = time.perf_counter()
  sequential_step = programs[0].train_step.lower(states[0], batches[0]).compile()
  vmapped_step = make_vmapped_train_step(programs[0], mesh).lower(
      stacked["state"], stacked_batch).compile()
  logging.info("width %d, %d seeds: compiled in %.1f s", config.model.g_width, num_seeds,
               time.perf_counter() - start)

  def sequential() -> None:
    for index in range(num_seeds):
      states[index], _ = sequential_step(states[index], batches[index])
    jax.block_until_ready(states)

  def vmapped() -> None:
    stacked["state"], _ = vmapped_step(stacked["state"], stacked_batch)
    jax.block_until_ready(stacked["state"])

  return sequential, vmapped


def time_rounds(rounds: dict[str, Callable[[], None]], repeats: int, warmup: int
                ) -> dict[str, float]:
  """Median seconds of each round, the rounds alternating."""
  for function in rounds.values():
    for _ in range(warmup):
      function()
  times: dict[str, list[float]] = {name: [] for name in rounds}
  for repeat in range(repeats):
    order = list(rounds) if repeat % 2 == 0 else list(rounds)[::-1]
    for name in order:
      start = time.perf_counter()
      rounds[name]()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(values) for name, values in times.items()}


def render(rows: Sequence[dict], config: ml_collections.ConfigDict, mesh) -> str:
  lines = [
      "# S seeds as one vmapped program vs S sequential runs",
      "",
      *machine_lines((os.getloadavg()[0],), devices_used=mesh.size),
      f"- Model: DCGAN {config.data.image_size}x{config.data.image_size}x{FLAGS.channels}, "
      f"batch {config.train.batch_size} per seed, latent {config.model.latent_dim}; median "
      f"of {FLAGS.repeats} rounds after {FLAGS.warmup} warm-up round(s), compiled ahead "
      "of time.",
      f"- Command: `{command_line()}`",
      "",
      "| width | seeds | sequential s/round | vmapped s/round | sequential seed-steps/s "
      "| vmapped seed-steps/s | speed-up |",
      "| --- | --- | --- | --- | --- | --- | --- |",
  ]
  for row in rows:
    lines.append(
        f"| {row['width']} | {row['seeds']} | {row['sequential']:.4f} | "
        f"{row['vmapped']:.4f} | {row['seeds'] / row['sequential']:.1f} | "
        f"{row['seeds'] / row['vmapped']:.1f} | "
        f"{row['sequential'] / row['vmapped']:.2f}x |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  del argv
  mesh = parallel.make_data_mesh(jax.devices()[:FLAGS.num_devices])
  rows = []
  for width in (int(value) for value in FLAGS.widths):
    config = _config(FLAGS.config, width)
    for num_seeds in (int(value) for value in FLAGS.num_seeds):
      sequential, vmapped = make_rounds(config, num_seeds, mesh, FLAGS.channels)
      medians = time_rounds({"sequential": sequential, "vmapped": vmapped},
                            FLAGS.repeats, FLAGS.warmup)
      rows.append({"width": width, "seeds": num_seeds, **medians})
      logging.info("width %d, %d seeds: sequential %.4f s, vmapped %.4f s (%.2fx)",
                   width, num_seeds, medians["sequential"], medians["vmapped"],
                   medians["sequential"] / medians["vmapped"])
  report = render(rows, FLAGS.config, mesh)
  print(report)
  if FLAGS.output:
    with open(FLAGS.output, "w") as file:
      file.write(report)


if __name__ == "__main__":
  define_flags()
  app.run(main)
