"""Spectral normalisation (Miyato et al. 2018) of Dense, Conv and Embed kernels.

A thin layer over `flax.linen.SpectralNorm`, which divides each kernel of the wrapped
layer (reshaped to a matrix (prod(kernel.shape[:-1]), out), as PyTorch's (out, -1)
transposed: the same singular values) by an estimate sigma of its largest singular
value, from `n_steps` power iterations started at a persistent vector `u`. Gradients
flow through the kernel in sigma = v W u^T with u and v held constant, as in the paper.

Variables:
  * `params`: unchanged. `spectral_normalized(nn.Conv(...), ...)` created in a module
    keeps the parameter path of a plain `nn.Conv(...)` (e.g. `params/Conv_0/kernel`),
    so turning spectral norm on or off leaves the parameter tree alone.
  * `batch_stats` (`SPECTRAL_NORM_COLLECTION`): `SpectralNorm_<i>/<layer>/kernel/u`
    (1, out) and `.../sigma` (), next to BatchNorm's statistics. `u` starts as N(0, 1)
    drawn from the `params` rng at `init`.

`update_stats` (bound to `train` in this package): when True, the new `u` and `sigma`
are written back, so the apply must pass `mutable=["batch_stats"]` and keep the
returned collection (the GAN step already does both for BatchNorm); every training
forward pass then advances the power iteration, as in PyTorch. When False (evaluation)
the stored `u` is read, never written, and the output is deterministic.

Across devices the power iteration needs no collective: `u` and the kernel are
replicated and the iteration does not read the (per-device) data, so every device
computes bit-identical `u` and `sigma` (checked in tests/test_gan_family_blocks.py).
"""

import functools
from typing import Callable

import flax.linen as nn
import jax

SPECTRAL_NORM_COLLECTION = "batch_stats"


def spectral_normalized(layer: nn.Module, *, enabled: bool, update_stats: bool,
                        n_steps: int = 1) -> Callable[..., jax.Array]:
  """Returns `layer`, spectrally normalised if `enabled`, ready to call on inputs.

  Call it inside a compact module's `__call__`, on a layer constructed there:
  `spectral_normalized(nn.Conv(64, (3, 3)), enabled=True, update_stats=train)(x)`.

  Args:
    layer: an unbound Dense, Conv, ConvTranspose or Embed (any layer whose matrices
      should have spectral norm 1; vectors such as biases are left alone).
    enabled: False returns `layer` itself (no variables besides its params).
    update_stats: write the advanced power-iteration state back (training).
    n_steps: power iterations per call (1 in the paper).
  """
  if not enabled:
    return layer
  return functools.partial(
      nn.SpectralNorm(layer, n_steps=n_steps,
                      collection_name=SPECTRAL_NORM_COLLECTION),
      update_stats=update_stats)
