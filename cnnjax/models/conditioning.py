"""Class conditioning: label embeddings, conditional BatchNorm, projection and AC-GAN heads.

Building blocks, and the conditional DCGAN built from them and `cnnjax.models.dcgan`:

* generator conditioning (`GENERATOR_CONDITIONING`): "concat", the article's cGAN (Mirza
  & Osindero 2014), a learned label embedding concatenated to the latent; "cbn",
  conditional BatchNorm with per-class scale and offset (de Vries et al. 2017).
* discriminator conditioning (`DISCRIMINATOR_CONDITIONING`): "concat", one-hot label
  maps concatenated to the image channels; "projection" (Miyato & Koyama 2018),
  logit = psi(phi(x)) + <embed(y), phi(x)>; "acgan" (Odena et al. 2017), an auxiliary
  classifier on the discriminator's features, which then returns
  (real/fake logits, class logits) and ignores its labels argument.

Labels are int arrays (B,) in [0, num_classes). Generators also take class weights
(B, K) floats in their place: the same mixture of the class embeddings (`embed_classes`),
which one-hot weights make exactly the integer label's (class interpolation).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Initializer

from cnnjax.errors import ConfigError
from cnnjax.models import dcgan
from cnnjax.models.spectral_norm import spectral_normalized
from cnnjax.models.upsample import upsample_layer

GENERATOR_CONDITIONING = ("concat", "cbn")
DISCRIMINATOR_CONDITIONING = ("concat", "projection", "acgan")


def check_conditioning(mode: str, options: tuple[str, ...], field: str,
                       num_classes: int) -> None:
  """Raises ConfigError unless `mode` is in `options` and `num_classes` >= 1.

  Args:
    mode: the conditioning mode asked for.
    options: the modes that are possible here.
    field: the config field that set `mode`, named in the message.
    num_classes: number of classes of the labels.
  """
  if mode not in options:
    raise ConfigError(f"Unknown {field} {mode!r}: use one of {', '.join(options)}.")
  if num_classes < 1:
    raise ConfigError(f"{field}={mode!r} needs class labels: train on a labelled "
                      f"dataset, or set {field}='none'.")


def require_labels(labels_b: jax.Array | None, module_name: str) -> jax.Array:
  """Returns `labels_b`, raising a ValueError if a conditional module got none."""
  if labels_b is None:
    raise ValueError(f"{module_name} is class-conditional: pass labels (B,) ints.")
  return labels_b


def embed_classes(embed: nn.Embed, labels: jax.Array) -> jax.Array:
  """The embeddings (B, F) of int labels (B,), or of class weights (B, K) floats: the
  weighted sum of the K class embeddings, so one-hot weights give `embed(labels)`."""
  if jnp.issubdtype(labels.dtype, jnp.integer):
    return embed(labels)
  return jnp.dot(labels.astype(embed.dtype), embed.embedding.astype(embed.dtype))


def one_hot_label_maps(labels_b: jax.Array, num_classes: int, height: int,
                       width: int, dtype: Any = jnp.float32) -> jax.Array:
  """One-hot labels broadcast over space: (B,) ints -> (B, height, width, num_classes)."""
  one_hot = jax.nn.one_hot(labels_b, num_classes, dtype=dtype)
  return jnp.broadcast_to(one_hot[:, None, None, :],
                          (labels_b.shape[0], height, width, num_classes))


def with_label_maps(images_bhwc: jax.Array, labels_b: jax.Array,
                    num_classes: int) -> jax.Array:
  """Images with one-hot label maps appended to their channels: (B, H, W, C + K)."""
  _, height, width, _ = images_bhwc.shape
  label_maps = one_hot_label_maps(labels_b, num_classes, height, width, images_bhwc.dtype)
  return jnp.concatenate([images_bhwc, label_maps], axis=-1)


class ConditionalBatchNorm(nn.Module):
  """BatchNorm whose scale (gamma) and offset (beta) are looked up per class.

  Normalisation and running averages are `nn.BatchNorm`'s (no scale/bias of its own;
  statistics averaged over `axis_name` in training, as the package's BatchNorm layers).
  Variables: `params/scale/embedding` and `params/offset/embedding` (num_classes, C);
  `batch_stats/BatchNorm_0/{mean,var}` (C,).

  Attributes:
    num_classes: number of classes.
    momentum: running-average momentum.
    epsilon: added to the variance.
    axis_name: mapped axis of synchronised statistics (used only when training).
    dtype: compute dtype.
    scale_init: initialiser of the (num_classes, C) scales.
  """
  num_classes: int
  momentum: float = 0.9
  epsilon: float = 1e-5
  axis_name: str | None = None
  dtype: Any = jnp.float32
  scale_init: Initializer = nn.initializers.ones

  @nn.compact
  def __call__(self, x_bhwc: jax.Array, labels_b: jax.Array, *, train: bool) -> jax.Array:
    """Normalises (B, ..., C) features with the scale and offset of each one's class."""
    features = x_bhwc.shape[-1]
    normalized = nn.BatchNorm(
        use_running_average=not train, momentum=self.momentum, epsilon=self.epsilon,
        axis_name=self.axis_name if train else None, use_scale=False, use_bias=False,
        dtype=self.dtype)(x_bhwc)
    per_class = lambda init, name: embed_classes(nn.Embed(
        self.num_classes, features, embedding_init=init, dtype=self.dtype,
        name=name), labels_b).reshape((-1,) + (1,) * (x_bhwc.ndim - 2) + (features,))
    scale = per_class(self.scale_init, "scale")
    offset = per_class(nn.initializers.zeros, "offset")
    return normalized * scale + offset


class ProjectionHead(nn.Module):
  """Projection discriminator's output: psi(phi) + <embed(y), phi>, (B, F) -> (B,).

  Variables: `params/linear/{kernel,bias}` (psi) and `params/class_embedding/embedding`
  (num_classes, F); with spectral norm, their power-iteration state in `batch_stats`.

  Attributes:
    num_classes: number of classes.
    spectral_norm: spectrally normalise psi and the embedding (as Miyato & Koyama).
    sn_steps: power iterations per call.
    kernel_init: initialiser of psi's kernel and of the class embedding.
    dtype: compute dtype.
  """
  num_classes: int
  spectral_norm: bool = False
  sn_steps: int = 1
  kernel_init: Initializer = nn.initializers.xavier_uniform()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features_bf: jax.Array, labels_b: jax.Array, *,
               train: bool) -> jax.Array:
    normalize = functools.partial(spectral_normalized, enabled=self.spectral_norm,
                                  update_stats=train, n_steps=self.sn_steps)
    unconditional_b = normalize(nn.Dense(
        1, dtype=self.dtype, kernel_init=self.kernel_init, name="linear"))(features_bf)
    class_embedding_bf = normalize(nn.Embed(
        self.num_classes, features_bf.shape[-1], embedding_init=self.kernel_init,
        dtype=self.dtype, name="class_embedding"))(labels_b)
    projection_b = jnp.sum(class_embedding_bf * features_bf, axis=-1)
    return (unconditional_b[:, 0] + projection_b).astype(jnp.float32)


class AuxiliaryClassifierHead(nn.Module):
  """AC-GAN's two heads on shared features: (B, F) -> (logits (B,), class logits (B, K)).

  Variables: `params/adversarial` (Dense to 1) and `params/classifier` (Dense to K).

  Attributes:
    num_classes: number of classes K.
    spectral_norm: spectrally normalise both heads.
    sn_steps: power iterations per call.
    kernel_init: initialiser of both kernels.
    dtype: compute dtype.
  """
  num_classes: int
  spectral_norm: bool = False
  sn_steps: int = 1
  kernel_init: Initializer = nn.initializers.xavier_uniform()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features_bf: jax.Array, *,
               train: bool) -> tuple[jax.Array, jax.Array]:
    head = lambda outputs, name: spectral_normalized(
        nn.Dense(outputs, dtype=self.dtype, kernel_init=self.kernel_init, name=name),
        enabled=self.spectral_norm, update_stats=train,
        n_steps=self.sn_steps)(features_bf).astype(jnp.float32)
    return head(1, "adversarial")[:, 0], head(self.num_classes, "classifier")


class ConditionalGenerator(nn.Module):
  """DCGAN generator conditioned on class labels: (B, Z), (B,) -> (B, R, R, C) in [-1, 1].

  "concat" embeds the labels (`params/label_embedding`, N(0, 1) like the latents) and
  runs `dcgan.Generator` (`params/dcgan/...`) on [latent, embedding]. "cbn" is the
  DCGAN architecture with every BatchNorm replaced by `ConditionalBatchNorm`.

  Attributes:
    resolution, channels: as `dcgan.Generator`.
    num_classes: number of classes.
    conditioning: one of `GENERATOR_CONDITIONING`.
    width, upsample, bn_momentum: as `dcgan.Generator`.
    label_embed_dim: size of the "concat" label embedding (None: num_classes).
    bn_axis_name, spectral_norm, sn_steps, dtype: as `dcgan.Generator`.
  """
  resolution: int
  channels: int
  num_classes: int
  conditioning: str = "concat"
  width: int = 64
  upsample: str = "fast"
  bn_momentum: float = 0.9
  label_embed_dim: int | None = None
  bn_axis_name: str | None = None
  spectral_norm: bool = False
  sn_steps: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, latents_bz: jax.Array, labels_b: jax.Array | None = None, *,
               train: bool) -> jax.Array:
    check_conditioning(self.conditioning, GENERATOR_CONDITIONING,
                       "model.g_conditioning", self.num_classes)
    labels_b = require_labels(labels_b, "ConditionalGenerator")
    if self.conditioning == "concat":
      embedding_be = embed_classes(nn.Embed(
          self.num_classes, self.label_embed_dim or self.num_classes,
          embedding_init=nn.initializers.normal(1.0), name="label_embedding"), labels_b)
      return dcgan.Generator(
          resolution=self.resolution, channels=self.channels, width=self.width,
          upsample=self.upsample, bn_momentum=self.bn_momentum,
          bn_axis_name=self.bn_axis_name, spectral_norm=self.spectral_norm,
          sn_steps=self.sn_steps, dtype=self.dtype, name="dcgan")(
              jnp.concatenate([latents_bz, embedding_be.astype(latents_bz.dtype)], -1),
              train=train)
    base, doublings = dcgan.resolution_plan(self.resolution)
    upsample_cls = upsample_layer(self.upsample)

    def conditional_norm_relu(x):
      return nn.relu(ConditionalBatchNorm(
          self.num_classes, momentum=self.bn_momentum, axis_name=self.bn_axis_name,
          dtype=self.dtype, scale_init=dcgan.dcgan_bn_scale_init)(
              x, labels_b, train=train))

    normalized = lambda layer: spectral_normalized(
        layer, enabled=self.spectral_norm, update_stats=train, n_steps=self.sn_steps)
    top_features = self.width * 2 ** (doublings - 1)
    x = normalized(nn.Dense(base * base * top_features, use_bias=False, dtype=self.dtype,
                            kernel_init=dcgan.dcgan_kernel_init))(
                                latents_bz.astype(self.dtype))
    x = conditional_norm_relu(x.reshape(-1, base, base, top_features))
    for level in range(1, doublings + 1):
      is_output = level == doublings
      x = normalized(upsample_cls(
          self.channels if is_output else top_features // 2**level, (4, 4), strides=(2, 2),
          padding="SAME", use_bias=is_output, dtype=self.dtype,
          kernel_init=dcgan.dcgan_kernel_init))(x)
      x = x if is_output else conditional_norm_relu(x)
    return jnp.tanh(x.astype(jnp.float32))


class ConditionalDiscriminator(nn.Module):
  """DCGAN discriminator conditioned on class labels: (B, R, R, C), (B,) -> logits (B,).

  "concat" runs `dcgan.Discriminator` (`params/dcgan/...`) on the images with one-hot
  label maps appended to their channels. "projection" and "acgan" put a
  `ProjectionHead` / `AuxiliaryClassifierHead` on the DCGAN convolutional features
  (B, F) in place of its final Dense; "acgan" returns (logits (B,), class logits
  (B, K)) and needs no labels.

  Attributes:
    resolution, width, bn_momentum, bn_axis_name, norm, spectral_norm, sn_steps,
      dtype: as `dcgan.Discriminator` (spectral norm covers the heads too).
    num_classes: number of classes.
    conditioning: one of `DISCRIMINATOR_CONDITIONING`.
  """
  resolution: int
  num_classes: int
  conditioning: str = "projection"
  width: int = 64
  bn_momentum: float = 0.9
  bn_axis_name: str | None = None
  norm: str = "batch"
  spectral_norm: bool = False
  sn_steps: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, labels_b: jax.Array | None = None, *,
               train: bool) -> jax.Array | tuple[jax.Array, jax.Array]:
    check_conditioning(self.conditioning, DISCRIMINATOR_CONDITIONING,
                       "model.d_conditioning", self.num_classes)
    head_options = dict(spectral_norm=self.spectral_norm, sn_steps=self.sn_steps,
                        kernel_init=dcgan.dcgan_kernel_init, dtype=self.dtype)
    if self.conditioning == "acgan":
      return AuxiliaryClassifierHead(self.num_classes, **head_options)(
          dcgan.discriminator_features(self, images_bhwc, train), train=train)
    labels_b = require_labels(labels_b, "ConditionalDiscriminator")
    if self.conditioning == "projection":
      return ProjectionHead(self.num_classes, **head_options)(
          dcgan.discriminator_features(self, images_bhwc, train), labels_b, train=train)
    return dcgan.Discriminator(
        resolution=self.resolution, width=self.width, bn_momentum=self.bn_momentum,
        bn_axis_name=self.bn_axis_name, norm=self.norm, spectral_norm=self.spectral_norm,
        sn_steps=self.sn_steps, dtype=self.dtype, name="dcgan")(
            with_label_maps(images_bhwc, labels_b, self.num_classes), train=train)
