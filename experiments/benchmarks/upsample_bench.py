"""Times transposed convolutions: flax vs FastConvTranspose's methods vs torch.

Two tables: 'forward+backward' computes the layer's output and the gradients
w.r.t. kernel and input (for a fixed random output cotangent), as one training
step would; 'forward' computes the output alone. Times are the median of
`--repeats` runs after `--warmup` runs (JAX functions are compiled ahead of time,
so compilation is never timed). The variants of one layer and batch are timed
round-robin (one run of each in turn), so that a shared machine's changing load
hits all of them alike. flax's ConvTranspose takes seconds per forward+backward
step on CPU, so that one gets no warm-up run and its own `--flax_repeats`.

  python experiments/benchmarks/upsample_bench.py --repeats=5 --flax_repeats=1

Prints markdown tables; writes nothing.
"""

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

import flax  # noqa: E402
import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402

from cnnjax.models import upsample  # noqa: E402

_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per implementation.")
_FLAX_REPEATS = flags.DEFINE_integer("flax_repeats", 1, "Timed runs for flax.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed runs before timing.")
_BATCHES = flags.DEFINE_list("batches", ["64", "128"], "Batch sizes.")
_SKIP_FLAX = flags.DEFINE_bool("skip_flax", False,
                               "Skip flax's slow ConvTranspose forward+backward.")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Skip torch.")

# DCGAN generator layers (k=4, s=2, 'SAME'): (size, in channels, out channels).
LAYERS = ((8, 256, 128), (4, 512, 256), (16, 128, 64))


def _median_ms_round_robin(steps: dict[str, tuple[Callable[[], object], int, int]]
                           ) -> dict[str, float]:
  """Median ms of each `name: (step, repeats, warmup)`, runs interleaved."""
  for step, _, warmup in steps.values():
    for _ in range(warmup):
      step()
  times = {name: [] for name in steps}
  for i in range(max(repeats for _, repeats, _ in steps.values())):
    for name, (step, repeats, _) in steps.items():
      if i < repeats:
        start = time.perf_counter()
        step()
        times[name].append(time.perf_counter() - start)
  return {name: 1e3 * statistics.median(t) for name, t in times.items()}


def _jax_step(layer: nn.Module, x_bhwc: np.ndarray, g_bhwc: np.ndarray,
              kernel_hwio: np.ndarray, backward: bool = True) -> Callable[[], object]:
  """Compiled (kernel, input) gradients of <layer(x), g> (or layer(x)), a thunk."""

  def forward(kernel, x):
    return layer.apply({"params": {"kernel": kernel}}, x)

  def loss(kernel, x):
    return jnp.vdot(forward(kernel, x), g_bhwc)

  args = (jnp.asarray(kernel_hwio), jnp.asarray(x_bhwc))
  fun = jax.grad(loss, argnums=(0, 1)) if backward else forward
  compiled = jax.jit(fun).lower(*args).compile()
  return lambda: jax.block_until_ready(compiled(*args))


def _torch_forward(x_bhwc: np.ndarray, kernel_hwio: np.ndarray,
                   channels_last: bool) -> Callable[[], object]:
  """torch.nn.functional.conv_transpose2d forward alone, no autograd (a thunk)."""
  import torch  # pylint: disable=g-import-not-at-top

  weight = torch.from_numpy(np.ascontiguousarray(
      kernel_hwio[::-1, ::-1].transpose(2, 3, 0, 1)))
  x = torch.from_numpy(x_bhwc.transpose(0, 3, 1, 2).copy())
  if channels_last:
    weight = weight.contiguous(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)

  def step():
    with torch.no_grad():
      return torch.nn.functional.conv_transpose2d(x, weight, stride=2, padding=1)

  return step


def _torch_step(x_bhwc: np.ndarray, g_bhwc: np.ndarray, kernel_hwio: np.ndarray,
                channels_last: bool) -> Callable[[], object]:
  """torch.nn.ConvTranspose2d forward+backward with the same weights (as a thunk)."""
  import torch  # pylint: disable=g-import-not-at-top

  in_ch, out_ch = kernel_hwio.shape[2:]
  layer = torch.nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False)
  # flax (transpose_kernel=False) correlates with the unflipped kernel; torch's
  # weight (in, out, kh, kw) is the kernel of the forward conv, i.e. flipped.
  weight = np.ascontiguousarray(kernel_hwio[::-1, ::-1].transpose(2, 3, 0, 1))
  with torch.no_grad():
    layer.weight.copy_(torch.from_numpy(weight))
  x = torch.from_numpy(x_bhwc.transpose(0, 3, 1, 2).copy())
  g = torch.from_numpy(g_bhwc.transpose(0, 3, 1, 2).copy())
  if channels_last:
    layer = layer.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    g = g.contiguous(memory_format=torch.channels_last)
  x.requires_grad_(True)

  def step():
    layer.weight.grad = x.grad = None
    layer(x).backward(g)
    return layer.weight.grad, x.grad

  return step


def _check_torch_matches(x_bhwc, kernel_hwio) -> None:
  """The torch layer computes the same function as flax's (sanity check)."""
  import torch  # pylint: disable=g-import-not-at-top

  ref = nn.ConvTranspose(kernel_hwio.shape[-1], (4, 4), (2, 2), use_bias=False).apply(
      {"params": {"kernel": kernel_hwio}}, x_bhwc[:2])
  weight = torch.from_numpy(np.ascontiguousarray(
      kernel_hwio[::-1, ::-1].transpose(2, 3, 0, 1)))
  out = torch.nn.functional.conv_transpose2d(
      torch.from_numpy(x_bhwc[:2].transpose(0, 3, 1, 2).copy()), weight,
      stride=2, padding=1)
  np.testing.assert_allclose(out.numpy().transpose(0, 2, 3, 1), ref,
                             rtol=1e-4, atol=1e-4)


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as cpuinfo:
      for line in cpuinfo:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _layer_steps(x, g, kernel, backward: bool):
  """name -> (thunk, repeats, warmup) of every implementation for one layer."""
  out_ch = kernel.shape[-1]
  steps = {}
  if not backward or not _SKIP_FLAX.value:
    layer = nn.ConvTranspose(out_ch, (4, 4), (2, 2), padding="SAME", use_bias=False)
    steps["flax ConvTranspose"] = (
        _jax_step(layer, x, g, kernel, backward),
        _FLAX_REPEATS.value if backward else _REPEATS.value,
        0 if backward else _WARMUP.value)
  for method in upsample.METHODS:
    layer = upsample.FastConvTranspose(out_ch, (4, 4), (2, 2), padding="SAME",
                                       use_bias=False, method=method)
    steps[f"FastConvTranspose {method}"] = (
        _jax_step(layer, x, g, kernel, backward), _REPEATS.value, _WARMUP.value)
  if not _SKIP_TORCH.value:
    for channels_last in (False, True):
      label = "torch channels_last" if channels_last else "torch NCHW"
      step = (_torch_step(x, g, kernel, channels_last) if backward
              else _torch_forward(x, kernel, channels_last))
      steps[label] = (step, _REPEATS.value, _WARMUP.value)
  return steps


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top

  load_before = ", ".join(f"{load:.1f}" for load in os.getloadavg())
  rng = np.random.default_rng(0)
  rows = {True: [], False: []}
  for batch in map(int, _BATCHES.value):
    for size, in_ch, out_ch in LAYERS:
      x = rng.standard_normal((batch, size, size, in_ch), np.float32)
      g = rng.standard_normal((batch, 2 * size, 2 * size, out_ch), np.float32)
      kernel = (0.02 * rng.standard_normal((4, 4, in_ch, out_ch))).astype(np.float32)
      _check_torch_matches(x, kernel)
      name = f"{size}x{size}x{in_ch} -> {2 * size}x{2 * size}x{out_ch}"
      for backward in (True, False):
        times = _median_ms_round_robin(_layer_steps(x, g, kernel, backward))
        best = min(ms for impl, ms in times.items() if impl.startswith("Fast"))
        for impl, ms in times.items():
          vs_flax = (f"{times['flax ConvTranspose'] / ms:.1f}x"
                     if "flax ConvTranspose" in times else "-")
          rows[backward].append(f"| {name} | {batch} | {impl} | {ms:.1f} | "
                                f"{vs_flax} | {ms / best:.2f} |")

  print(f"Batches {', '.join(_BATCHES.value)}, k=4, s=2, 'SAME', no bias, float32; "
        f"median of {_REPEATS.value} runs after {_WARMUP.value} warm-up run(s), "
        f"round-robin (flax forward+backward: {_FLAX_REPEATS.value} run(s), no "
        f"warm-up); load average before: {load_before}, after: "
        f"{', '.join(f'{load:.1f}' for load in os.getloadavg())}.\n")
  print(f"Machine: {_cpu_model()}, {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}, "
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, flax {flax.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"JAX backend {jax.default_backend()}.\n")
  for backward in (True, False):
    print("Forward+backward (grads w.r.t. kernel and input):\n" if backward
          else "\nForward alone:\n")
    print("| layer | batch | implementation | ms | speed-up vs flax "
          "| time / best FastConvTranspose |")
    print("|---|---:|---|---:|---:|---:|")
    print("\n".join(rows[backward]))


if __name__ == "__main__":
  app.run(main)
