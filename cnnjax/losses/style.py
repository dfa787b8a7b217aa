"""Losses of neural style transfer (Gatys et al. 2016): Gram matrices, content, style and
total variation.

Every function takes feature maps or images laid out (..., H, W, C), with any leading
batch axes, and returns one value per leading index. No weight is hidden: the weights of
the style layers and of the three terms are arguments.

  G(F)[c, d] = sum_{h, w} F[h, w, c] F[h, w, d] / (H * W * C)
  content(F, P) = mean_{h, w, c} (F - P)^2
  style({F_l}, {A_l}, {w_l}) = sum_l w_l * mean_{c, d} (G(F_l) - A_l)^2
  tv(x) = mean_{h, w, c} (x[h+1, w] - x[h, w])^2 + mean_{h, w, c} (x[h, w+1] - x[h, w])^2

Dividing the Gram matrix by H * W * C (rather than by H * W alone, or not at all) makes
its entries independent of the layer's size, so layers of different resolutions and
widths contribute on one scale.
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp


def gram_matrix(features: jax.Array) -> jax.Array:
  """The normalised Gram matrix of feature maps.

  Args:
    features: (..., H, W, C) activations.

  Returns:
    (..., C, C): sum over positions of the outer products of the feature vectors,
    divided by H * W * C.
  """
  h, w, c = features.shape[-3:]
  gram = jnp.einsum("...hwc,...hwd->...cd", features, features,
                    precision=jax.lax.Precision.HIGHEST)
  return gram / (h * w * c)


def content_loss(features: jax.Array, target: jax.Array) -> jax.Array:
  """Mean squared error between one layer's activations and the content's.

  Args:
    features: (..., H, W, C) activations of the image being optimised.
    target: activations of the content image, of the same shape.

  Returns:
    (...) mean over H, W, C of the squared difference.
  """
  return jnp.mean(jnp.square(features - target), axis=(-3, -2, -1))


def style_loss(features: Mapping[str, jax.Array], target_grams: Mapping[str, jax.Array],
               layer_weights: Mapping[str, float]) -> jax.Array:
  """Weighted sum over layers of the mean squared error between Gram matrices.

  Args:
    features: layer name -> (..., H, W, C) activations of the image being optimised.
    target_grams: layer name -> (..., C, C) Gram matrices of the style image
      (`gram_matrix`).
    layer_weights: layer name -> weight; the layers summed over.

  Returns:
    (...) sum_l w_l * mean_{c, d} (G(F_l) - A_l)^2.
  """
  if not layer_weights:
    raise ValueError("style_loss needs at least one layer")
  terms = [weight * jnp.mean(jnp.square(gram_matrix(features[name]) - target_grams[name]),
                             axis=(-2, -1))
           for name, weight in layer_weights.items()]
  return sum(terms[1:], terms[0])


def total_variation(images: jax.Array) -> jax.Array:
  """Squared total variation: the mean squared difference of neighbouring pixels.

  Args:
    images: (..., H, W, C) pixels.

  Returns:
    (...) mean over the vertical neighbour pairs plus mean over the horizontal ones.
  """
  vertical = jnp.mean(jnp.square(images[..., 1:, :, :] - images[..., :-1, :, :]),
                      axis=(-3, -2, -1))
  horizontal = jnp.mean(jnp.square(images[..., :, 1:, :] - images[..., :, :-1, :]),
                        axis=(-3, -2, -1))
  return vertical + horizontal


def weighted_total(content: jax.Array, style: jax.Array, tv: jax.Array, *,
                   content_weight: float, style_weight: float,
                   tv_weight: float) -> jax.Array:
  """content_weight * content + style_weight * style + tv_weight * tv."""
  return content_weight * content + style_weight * style + tv_weight * tv
