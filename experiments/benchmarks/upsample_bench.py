"""Times forward+backward of transposed convolutions: flax vs FastConvTranspose vs torch.

Each step computes the layer's output and the gradients w.r.t. kernel and input
(for a fixed random output cotangent), as one training step would. Times are the
median of `--repeats` runs after `--warmup` runs (JAX functions are compiled ahead
of time, so compilation is never timed). flax's ConvTranspose takes seconds per
step on CPU, so it gets no warm-up run and its own `--flax_repeats`.

  python experiments/benchmarks/upsample_bench.py --repeats=5 --flax_repeats=1

Prints a markdown table; writes nothing.
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
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size.")
_SKIP_FLAX = flags.DEFINE_bool("skip_flax", False, "Skip flax's slow ConvTranspose.")

# DCGAN generator layers (k=4, s=2, 'SAME'): (size, in channels, out channels).
LAYERS = ((8, 256, 128), (4, 512, 256), (16, 128, 64))


def _median_ms(step: Callable[[], object], repeats: int, warmup: int) -> float:
  for _ in range(warmup):
    step()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def _jax_step(layer: nn.Module, x_bhwc: np.ndarray, g_bhwc: np.ndarray,
              kernel_hwio: np.ndarray) -> Callable[[], object]:
  """Compiled (kernel, input) gradients of <layer(x), g>, as a thunk."""

  def loss(kernel, x):
    return jnp.vdot(layer.apply({"params": {"kernel": kernel}}, x), g_bhwc)

  args = (jnp.asarray(kernel_hwio), jnp.asarray(x_bhwc))
  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).compile()
  return lambda: jax.block_until_ready(compiled(*args))


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


def main(argv):
  del argv
  import torch  # pylint: disable=g-import-not-at-top

  load_before = ", ".join(f"{load:.1f}" for load in os.getloadavg())
  rng = np.random.default_rng(0)
  rows = []
  for size, in_ch, out_ch in LAYERS:
    batch = _BATCH.value
    x = rng.standard_normal((batch, size, size, in_ch), np.float32)
    g = rng.standard_normal((batch, 2 * size, 2 * size, out_ch), np.float32)
    kernel = (0.02 * rng.standard_normal((4, 4, in_ch, out_ch))).astype(np.float32)
    _check_torch_matches(x, kernel)
    name = f"{size}x{size}x{in_ch} -> {2 * size}x{2 * size}x{out_ch}"
    times = {}
    if not _SKIP_FLAX.value:
      layer = nn.ConvTranspose(out_ch, (4, 4), (2, 2), padding="SAME", use_bias=False)
      times["flax ConvTranspose"] = _median_ms(
          _jax_step(layer, x, g, kernel), _FLAX_REPEATS.value, warmup=0)
    for method in upsample.METHODS:
      layer = upsample.FastConvTranspose(out_ch, (4, 4), (2, 2), padding="SAME",
                                         use_bias=False, method=method)
      times[f"FastConvTranspose {method}"] = _median_ms(
          _jax_step(layer, x, g, kernel), _REPEATS.value, _WARMUP.value)
    for channels_last in (False, True):
      label = "torch channels_last" if channels_last else "torch NCHW"
      times[label] = _median_ms(_torch_step(x, g, kernel, channels_last),
                                _REPEATS.value, _WARMUP.value)
    torch_best = min(times["torch NCHW"], times["torch channels_last"])
    for impl, ms in times.items():
      vs_flax = (f"{times['flax ConvTranspose'] / ms:.1f}x"
                 if "flax ConvTranspose" in times else "-")
      rows.append(f"| {name} | {impl} | {ms:.0f} | {vs_flax} | {ms / torch_best:.2f} |")

  print(f"Forward+backward (grads w.r.t. kernel and input), batch {_BATCH.value}, "
        "k=4, s=2, 'SAME', float32; median of "
        f"{_REPEATS.value} runs after {_WARMUP.value} warm-up run(s) (flax: "
        f"{_FLAX_REPEATS.value} run(s), no warm-up); load average before: "
        f"{load_before}.\n")
  print(f"Machine: {_cpu_model()}, {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}, "
        f"jax {jax.__version__}, jaxlib {jaxlib.__version__}, flax {flax.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"JAX backend {jax.default_backend()}.\n")
  print("| layer | implementation | ms | speed-up vs flax | time / best torch |")
  print("|---|---|---:|---:|---:|")
  print("\n".join(rows))


if __name__ == "__main__":
  app.run(main)
