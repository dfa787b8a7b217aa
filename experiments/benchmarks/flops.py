"""Model FLOPs of a training step, and the fraction of the device's peak a step achieves.

A step's *model FLOPs* are counted once per size and credited to every implementation of
it (cnnjax and PyTorch run the same model): `xla_flops` is XLA's cost analysis of
cnnjax's lowered step (multiply-adds of the convolutions and matmuls, excluding the
zeros of padding and of lhs dilation, plus the elementwise work); `torch_flops` is
PyTorch's `FlopCounterMode` over the reference's step (convolutions and matmuls over
their whole windows, padding included), printed beside it as a cross-check.

The peak is the device's datasheet figure where one is known for the GPU
(`DATASHEET_PEAK_TFLOPS`, dense tensor-core rates), otherwise the fastest
matrix multiplication this machine was measured to do in that precision
(`measured_matmul_flops`: the best of jax and, if installed, PyTorch), so the fraction
reads as "of what this hardware demonstrably does".
"""

import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from experiments.benchmarks.timing import usable_cores

# Dense peak TFLOP/s by a substring of `jax.Device.device_kind`, most specific first.
# float32 runs use TF32 tensor cores on these GPUs, as both libraries do by default for
# convolutions (cuDNN's allow_tf32; XLA's default precision), so its peak is TF32's.
DATASHEET_PEAK_TFLOPS: tuple[tuple[str, str, dict[str, float]], ...] = (
    ("H100 PCIe", "NVIDIA H100 PCIe datasheet", {"float32": 378.0, "bfloat16": 756.0}),
    ("H100", "NVIDIA H100 SXM datasheet", {"float32": 494.7, "bfloat16": 989.4}),
    ("H200", "NVIDIA H200 SXM datasheet", {"float32": 494.7, "bfloat16": 989.4}),
    ("A100", "NVIDIA A100 datasheet", {"float32": 156.0, "bfloat16": 312.0}),
)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def xla_flops(lowered: jax.stages.Lowered) -> float:
  """FLOPs of a lowered jax computation, by XLA's cost analysis (0 if it gives none)."""
  analysis = lowered.cost_analysis() or {}
  if isinstance(analysis, (list, tuple)):  # Older jax: one dict per computation.
    analysis = analysis[0] if analysis else {}
  return float(analysis.get("flops", 0.0))


def torch_flops(step: Callable[[], object]) -> float:
  """FLOPs that PyTorch's `FlopCounterMode` counts over one call of `step`."""
  from torch.utils.flop_counter import FlopCounterMode  # pylint: disable=g-import-not-at-top
  with FlopCounterMode(display=False) as counter:
    step()
  return float(counter.get_total_flops())


def _best_seconds(run: Callable[[], None], repeats: int) -> float:
  run()  # Compile / warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measured_matmul_flops(precision: str, *, size: int | None = None,
                          repeats: int = 5) -> dict[str, float]:
  """FLOP/s of a square matrix multiplication on jax's first device, by library.

  Args:
    precision: "float32" or "bfloat16".
    size: the matrices' side (default 4096 on CPU, 8192 on accelerators).
    repeats: timed multiplications (the median counts).

  Returns:
    {"jax": FLOP/s, "torch": FLOP/s} (torch only if installed, with all usable cores;
    on the GPU if jax is).
  """
  device = jax.devices()[0]
  size = size or (4096 if device.platform == "cpu" else 8192)
  flops = 2.0 * size ** 3
  matrix = jax.device_put(jnp.ones((size, size), _DTYPES[precision]), device)
  matmul = jax.jit(lambda a: a @ a)
  rates = {"jax": flops / _best_seconds(
      lambda: jax.block_until_ready(matmul(matrix)), repeats)}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return rates
  on_gpu = device.platform == "gpu" and torch.cuda.is_available()
  tensor = torch.ones(size, size, dtype=getattr(torch, precision),
                      device="cuda" if on_gpu else "cpu")

  def torch_matmul() -> None:
    _ = tensor @ tensor
    if on_gpu:
      torch.cuda.synchronize()

  threads = torch.get_num_threads()
  torch.set_num_threads(usable_cores())  # All of them, whatever a benchmark left set.
  try:
    rates["torch"] = flops / _best_seconds(torch_matmul, repeats)
  finally:
    torch.set_num_threads(threads)
  return rates


def datasheet_peak(device_kind: str, precision: str) -> tuple[float, str] | None:
  """(peak FLOP/s, source) from `DATASHEET_PEAK_TFLOPS`, or None for unknown devices."""
  for key, source, peaks in DATASHEET_PEAK_TFLOPS:
    if key in device_kind and precision in peaks:
      return peaks[precision] * 1e12, f"{source} ({device_kind}), dense {precision}"
  return None


def peak_flops(precision: str, *, matmul_size: int | None = None) -> tuple[float, str]:
  """(peak FLOP/s, where it comes from) for `precision` on jax's first device.

  Args:
    precision: "float32" or "bfloat16".
    matmul_size: side of the measured multiplication where no datasheet peak is known.
  """
  known = datasheet_peak(jax.devices()[0].device_kind, precision)
  if known is not None:
    return known
  rates = measured_matmul_flops(precision, size=matmul_size)
  best = max(rates, key=rates.get)
  measured = ", ".join(f"{name} {rate / 1e9:.0f}" for name, rate in rates.items())
  return rates[best], (f"fastest {precision} matrix multiplication measured on this "
                       f"{jax.devices()[0].platform} (GFLOP/s: {measured})")
