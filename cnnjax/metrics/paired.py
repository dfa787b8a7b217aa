"""Per-image agreement of a translation with its ground truth: L1, PSNR and SSIM
(dm-pix's implementations), on images in [-1, 1] mapped to [0, 1]."""

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np


@jax.jit
def _scores(outputs_nhwc: jax.Array, targets_nhwc: jax.Array) -> dict[str, jax.Array]:
  a = (outputs_nhwc + 1.0) / 2.0
  b = (targets_nhwc + 1.0) / 2.0
  return {"l1": jnp.mean(jnp.abs(a - b), axis=(1, 2, 3)),
          "psnr": dm_pix.psnr(a, b),
          "ssim": dm_pix.ssim(a, b, filter_size=min(11, a.shape[1]))}


def paired_scores(outputs_nhwc: np.ndarray, targets_nhwc: np.ndarray) -> dict[str, float]:
  """Mean L1 (in [0, 1] units), PSNR (dB, peak 1) and SSIM over N image pairs.

  Identical images have an infinite PSNR; its mean is then reported as inf.
  """
  if np.shape(outputs_nhwc) != np.shape(targets_nhwc):
    raise ValueError(f"Outputs {np.shape(outputs_nhwc)} and targets "
                     f"{np.shape(targets_nhwc)} differ in shape.")
  scores = jax.device_get(_scores(jnp.asarray(outputs_nhwc, jnp.float32),
                                  jnp.asarray(targets_nhwc, jnp.float32)))
  return {name: float(np.mean(values)) for name, values in scores.items()}
