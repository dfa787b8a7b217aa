"""What every benchmark here shares: timed variants, interleaved timing, the machine.

A benchmark builds one `Variant` per implementation (cnnjax, PyTorch in each memory
format and thread count, ...), then `time_interleaved` warms each up and times them
round-robin, the order rotating every round, so that all of them see the same load on
a shared machine. `machine_lines` and `command_line` are the context every results
table is written with.
"""

import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np
from absl import flags, logging

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Variant:
  """One benchmarked implementation at one size: untimed warm-up, then timed steps.

  Attributes:
    name: column label.
    batch_size: images per step.
    max_steps: most timed steps (None: as many as the benchmark's rounds).
    warmup_steps: untimed steps before timing (None: the benchmark's `--warmup`).
    prepare: called, untimed, before every step (e.g. to set PyTorch's threads).
    times: seconds of each timed step.
  """

  def __init__(self, name: str, batch_size: int, step: Callable[[], None], *,
               max_steps: int | None = None, warmup_steps: int | None = None,
               prepare: Callable[[], None] | None = None):
    self.name = name
    self.batch_size = batch_size
    self.max_steps = max_steps
    self.warmup_steps = warmup_steps
    self.prepare = prepare
    self._step: Callable[[], None] | None = step
    self.times: list[float] = []

  @property
  def wants_more(self) -> bool:
    return self.max_steps is None or len(self.times) < self.max_steps

  def release(self) -> None:
    """Drops the step (and the state, program and batch it holds) once timed."""
    self._step = None

  def warmup(self, steps: int) -> float:
    """Runs `steps` untimed steps; returns their total seconds."""
    if self.prepare is not None:
      self.prepare()
    start = time.perf_counter()
    for _ in range(steps):
      self._step()
    return time.perf_counter() - start

  def time_step(self) -> float:
    """Runs and records one step; returns its seconds."""
    if self.prepare is not None:
      self.prepare()
    start = time.perf_counter()
    self._step()
    elapsed = time.perf_counter() - start
    self.times.append(elapsed)
    return elapsed

  @property
  def median_seconds(self) -> float:
    return statistics.median(self.times)

  @property
  def images_per_second(self) -> float:
    return self.batch_size / self.median_seconds


def time_interleaved(variants: Sequence[Variant], *, repeats: int, warmup: int,
                     label: str = "") -> None:
  """Warms up every variant, then times `repeats` rounds of one step each, the order
  rotating every round; each variant is released (its state dropped) at the end.

  Args:
    variants: the implementations to time.
    repeats: timed rounds.
    warmup: untimed steps per variant (unless the variant sets its own).
    label: prefix of the log lines (e.g. the size being timed).
  """
  for variant in variants:
    steps = warmup if variant.warmup_steps is None else variant.warmup_steps
    seconds = variant.warmup(steps)
    logging.info("%s %s: %d warm-up steps in %.2f s", label, variant.name, steps, seconds)
  for round_index in range(repeats):
    shift = round_index % len(variants)
    for variant in list(variants[shift:]) + list(variants[:shift]):
      if variant.wants_more:
        seconds = variant.time_step()
        logging.info("%s %s: %.4f s", label, variant.name, seconds)
  for variant in variants:
    variant.release()


def usable_cores() -> int:
  """Cores this process may run on (its affinity), else the machine's count."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def cpu_model() -> str:
  """The CPU's model name from /proc/cpuinfo (or `platform.processor()`)."""
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def library_versions() -> dict[str, str]:
  """Versions of the libraries that decide the timings."""
  import flax  # pylint: disable=g-import-not-at-top
  import jaxlib  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  versions = {"python": platform.python_version(), "jax": jax.__version__,
              "jaxlib": jaxlib.__version__, "flax": flax.__version__,
              "optax": optax.__version__, "numpy": np.__version__}
  try:
    import torch  # pylint: disable=g-import-not-at-top
    versions["torch"] = torch.__version__
  except ImportError:
    versions["torch"] = "not installed"
  return versions


def package_versions(packages: Sequence[str]) -> str:
  """"Python 3.11.7, jax 0.10.2, ..." for the installed ones of `packages`."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  found = [f"Python {platform.python_version()}"]
  for package in packages:
    try:
      found.append(f"{package} {metadata.version(package)}")
    except metadata.PackageNotFoundError:
      pass
  return ", ".join(found)


def machine_summary() -> str:
  """The CPU, its visible cores and the operating system, in one line."""
  return (f"{cpu_model()}, {os.cpu_count()} cores visible, {platform.system()} "
          f"{platform.release()}")


def command_line() -> str:
  """The command that ran this benchmark, as typed from the repository root."""
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  if spec is not None and spec.name:
    words = ["python", "-m", spec.name.removesuffix(".__main__")]
  else:
    words = ["python", os.path.relpath(sys.argv[0], _REPO_ROOT)]
  return shlex.join(words + sys.argv[1:])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" for _ in header) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


def machine_lines(load_averages: Sequence[float] = (), devices_used: int = 1
                  ) -> list[str]:
  """Markdown bullets: the date, the machine (CPU, cores, jax devices, load) and the
  library versions."""
  device = jax.devices()[0]
  load = ""
  if load_averages:
    when = " at start / end" if len(load_averages) == 2 else ""
    load = (f", 1-minute load average{when}: "
            + " / ".join(f"{value:.1f}" for value in load_averages))
  return [
      f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
      f"- Machine: {cpu_model()}, {usable_cores()} usable cores ({os.cpu_count()} "
      f"online); jax device: {device.platform} ({device.device_kind}), "
      f"{jax.device_count()} device(s) visible, {devices_used} used{load}",
      "- Versions: " + ", ".join(f"{name} {version}"
                                 for name, version in library_versions().items()),
  ]


def define_torch_flags(default_threads: Sequence[str]) -> None:
  """`--include_torch`, `--torch_memory_formats`, `--torch_threads` and `--output`."""
  flags.DEFINE_bool("include_torch", True, "Time the PyTorch reference.")
  flags.DEFINE_list(
      "torch_memory_formats", ["contiguous", "channels_last"],
      "PyTorch memory formats to time: contiguous (NCHW) and/or channels_last (NHWC).")
  flags.DEFINE_list("torch_threads", list(default_threads),
                    "torch.set_num_threads values to time; 0 means the usable cores.")
  flags.DEFINE_string("output", "", "Markdown file to write the report into.")


def random_images(batch_size: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
  """A fixed batch (batch_size, size, size, channels) of float32 images in [-1, 1]."""
  return np.random.default_rng(seed).uniform(
      -1, 1, (batch_size, size, size, channels)).astype(np.float32)


def ahead_of_time_step(train_step: Callable, state, batch, *, label: str = "",
                       lowered: jax.stages.Lowered | None = None
                       ) -> tuple[Callable[[], None], Callable[[], object]]:
  """Compiles `train_step(state, batch) -> (state, metrics)` ahead of time (from
  `lowered`, its lowering at these arguments, if the caller has it already).

  Returns:
    `(step, get_state)`: `step()` runs one step on the fixed `batch` and blocks until
    the new state is ready (the old one is donated); `get_state()` returns the state.
  """
  holder = {"state": jax.block_until_ready(state)}
  start = time.perf_counter()
  if lowered is None:
    lowered = train_step.lower(holder["state"], batch)
  compiled = lowered.compile()
  logging.info("%s compiled in %.1f s", label, time.perf_counter() - start)

  def step() -> None:
    new_state, _ = compiled(holder["state"], batch)
    holder["state"] = jax.block_until_ready(new_state)

  return step, lambda: holder["state"]
