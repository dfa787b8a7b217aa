"""Losses of neural style transfer (Gatys et al. 2016): Gram matrices, content, style and
total variation.

Every function takes feature maps or images laid out (..., H, W, C), with any leading
batch axes, and returns one value per leading index. No weight is hidden: the weights of
the style layers and of the three terms are arguments.

  G(F)[c, d] = sum_{h, w} F[h, w, c] F[h, w, d] / (H * W * C)
  content(F, P) = mean_{h, w, c} (F - P)^2
  style({F_l}, {A_l}, {w_l}) = sum_l w_l * mean_{c, d} (G(F_l) - A_l)^2
  tv(x) = mean_{h, w, c} (x[h+1, w] - x[h, w])^2 + mean_{h, w, c} (x[h, w+1] - x[h, w])^2

`perceptual_terms` combines them into the perceptual loss that both Gatys et al.'s
optimisation (`cnnjax.style.gatys`) and Johnson et al.'s fast networks
(`cnnjax.train.fast_style_program`) minimise, from the config's `features` and `loss`
sections, so that the two methods' losses are one function on one scale.

Dividing the Gram matrix by H * W * C (rather than by H * W alone, or not at all) makes
its entries independent of the layer's size, so layers of different resolutions and
widths contribute on one scale.
"""

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections

TERMS = ("content", "style", "tv", "total")
SCALE_EPS = 1e-8   # Keeps an all-zero layer's scale finite.


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


@dataclasses.dataclass(frozen=True)
class PerceptualSettings:
  """The perceptual loss's layers and weights (hashable: a jit static).

  Attributes:
    content_layer: the layer of the content term.
    style_layer_weights: ((layer, weight), ...) of the style term.
    content_weight, style_weight, tv_weight: the weights of the three terms.
    normalize: divide each layer's activations (of the image, of the content and of the
      style image alike) by their mean magnitude on the content image, so that the
      weights mean the same for every layer and network.
  """
  content_layer: str
  style_layer_weights: tuple[tuple[str, float], ...]
  content_weight: float
  style_weight: float
  tv_weight: float
  normalize: bool

  @property
  def layers(self) -> list[str]:
    # Sorted, not a set: the program (and so its compilation-cache key) must not depend
    # on Python's string hashing.
    return sorted({self.content_layer, *(name for name, _ in self.style_layer_weights)})


def perceptual_settings(config: ml_collections.ConfigDict) -> PerceptualSettings:
  """The settings of a style config's `features` and `loss` sections."""
  features, loss = config.features, config.loss
  return PerceptualSettings(
      content_layer=features.content_layer,
      style_layer_weights=tuple(zip(features.style_layers,
                                    map(float, features.style_layer_weights))),
      content_weight=float(loss.content_weight), style_weight=float(loss.style_weight),
      tv_weight=float(loss.tv_weight), normalize=features.normalize == "content")


def style_grams(features_fn: Callable[[jax.Array], dict[str, jax.Array]],
                style_hwc: jax.Array, settings: PerceptualSettings
                ) -> dict[str, jax.Array]:
  """{style layer: (C, C) Gram matrix} of one style image (unnormalised)."""
  features = features_fn(style_hwc[None])
  return {name: gram_matrix(features[name][0]) for name, _ in settings.style_layer_weights}


def perceptual_targets(features_fn: Callable[[jax.Array], dict[str, jax.Array]],
                       settings: PerceptualSettings, contents_bhwc: jax.Array,
                       grams: Mapping[str, jax.Array]) -> dict:
  """Each content image's constants of the loss (no gradient flows into them).

  Args:
    features_fn: images (B, H, W, 3) -> {layer: (B, h, w, c) activations}.
    settings: layers, weights and normalisation.
    contents_bhwc: the content images.
    grams: `style_grams` of the style image.

  Returns:
    {"scales": {layer: (B, 1, 1, 1)}, "content": (B, h, w, c) scaled activations,
     "grams": {style layer: (B, C, C) scaled Gram matrices}}.
  """
  features = jax.tree.map(jax.lax.stop_gradient, features_fn(contents_bhwc))
  batch = contents_bhwc.shape[0]
  scales = {name: (jnp.mean(jnp.abs(features[name]), axis=(1, 2, 3), keepdims=True)
                   + SCALE_EPS if settings.normalize else jnp.ones((batch, 1, 1, 1)))
            for name in settings.layers}
  layer = settings.content_layer
  return {"scales": scales, "content": features[layer] / scales[layer],
          # G(F / s) = G(F) / s^2.
          "grams": {name: jax.lax.stop_gradient(grams[name]) / jnp.square(
              scales[name][..., 0]) for name, _ in settings.style_layer_weights}}


def perceptual_terms(features_fn: Callable[[jax.Array], dict[str, jax.Array]],
                     settings: PerceptualSettings, images_bhwc: jax.Array,
                     targets: dict) -> dict[str, jax.Array]:
  """Each image's loss terms against its `perceptual_targets`.

  Returns:
    {"content", "style", "tv", "total": (B,)}, total being
    content_weight * content + style_weight * style + tv_weight * tv.
  """
  features = features_fn(images_bhwc)
  scales = targets["scales"]
  layer = settings.content_layer
  content = content_loss(features[layer] / scales[layer], targets["content"])
  weights = dict(settings.style_layer_weights)
  style = style_loss({name: features[name] / scales[name] for name in weights},
                     targets["grams"], weights)
  tv = total_variation(images_bhwc)
  total = weighted_total(content, style, tv, content_weight=settings.content_weight,
                         style_weight=settings.style_weight, tv_weight=settings.tv_weight)
  return {"content": content, "style": style, "tv": tv, "total": total}
