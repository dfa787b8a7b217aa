"""InceptionV3 of the standard FID (pytorch-fid's `fid_inception_v3`) in Flax Linen.

The network of TensorFlow's 2015-12-05 Inception graph as ported by pytorch-fid:
torchvision's InceptionV3 layout (`Conv2d_1a_3x3` ... `Mixed_7c`, `fc`) with the FID
patches of `FIDInceptionA/C/E_1/E_2`: the 3x3 average pools in Mixed_5b-d, 6b-e and
7b ignore padded zeros (TensorFlow's `count_include_pad=False`), and Mixed_7c pools its
last branch with a 3x3 max-pool instead. Convolutions have no bias and are followed
by BatchNorm (eps 1e-3, running statistics: inference only) and ReLU.

Channels-last (NHWC); submodule names equal pytorch-fid's, so its state dict maps
one-to-one onto the Flax variables (`validate_state_dict`, `state_dict_to_variables`;
reading the weight file: `cnnjax.models.inception_weights`). The output is the 2048-d
pool3 feature vector, and optionally the 1008 logits of the TF graph.
"""

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from cnnjax.errors import CheckpointError, ConfigError

INPUT_SIZE = 299
NUM_FEATURES = 2048
NUM_CLASSES = 1008
BN_EPSILON = 1e-3
PT_INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
PT_INCEPTION_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/"
                    f"fid_weights/{PT_INCEPTION_FILENAME}")
_IGNORED_SUFFIX = ".num_batches_tracked"  # BatchNorm counters: unused at inference.

Padding = tuple[int, int]


def resize_bilinear(images_bhwc: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Bilinear resize as PyTorch's `F.interpolate(mode='bilinear', align_corners=False)`.

  Half-pixel centres, edge pixels repeated, and no antialiasing when downsampling
  (the kernel is not widened), exactly like pytorch-fid's resize.

  Args:
    images_bhwc: images, shape (B, H, W, C).
    size: output (height, width).

  Returns:
    Resized images, shape (B, size[0], size[1], C), float32.
  """
  images_bhwc = jnp.asarray(images_bhwc, jnp.float32)
  batch, height, width, channels = images_bhwc.shape
  if (height, width) == tuple(size):
    return images_bhwc
  return jax.image.resize(images_bhwc, (batch, size[0], size[1], channels),
                          method="bilinear", antialias=False,
                          precision=jax.lax.Precision.HIGHEST)


def fid_preprocess(images_bhwc: jax.Array, *, resize: bool = True) -> jax.Array:
  """Maps images in [-1, 1] to the Inception input, as pytorch-fid does.

  pytorch-fid takes images in [0, 1], resizes them bilinearly to 299x299 and scales
  them to [-1, 1] (`normalize_input`). Our images are in [-1, 1], so they are first
  mapped to [0, 1]; the same three steps then follow. Grey images (C == 1) are
  repeated to three channels.

  Args:
    images_bhwc: images in [-1, 1], shape (B, H, W, C) with C in {1, 3}, any H, W.
    resize: resize to 299x299 (pytorch-fid's `resize_input`).

  Returns:
    Network input in [-1, 1], shape (B, 299, 299, 3) (or (B, H, W, 3) unresized).

  Raises:
    ConfigError: if the images are not (B, H, W, 1 or 3).
  """
  if images_bhwc.ndim != 4 or images_bhwc.shape[-1] not in (1, 3):
    raise ConfigError(
        f"InceptionV3 needs images of shape (B, H, W, 1 or 3), got "
        f"{tuple(images_bhwc.shape)}: pass a channels-last batch of grey or RGB images.")
  x = (jnp.asarray(images_bhwc, jnp.float32) + 1.0) / 2.0  # [-1, 1] -> [0, 1].
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if resize:
    x = resize_bilinear(x, (INPUT_SIZE, INPUT_SIZE))
  return 2.0 * x - 1.0  # pytorch-fid's normalize_input: [0, 1] -> [-1, 1].


def avg_pool_3x3_exclude_pad(x_bhwc: jax.Array) -> jax.Array:
  """TF-style 3x3 stride-1 'SAME' average pool: padded zeros are not counted."""
  return nn.avg_pool(x_bhwc, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def max_pool_3x3(x_bhwc: jax.Array, stride: int, pad: int = 0) -> jax.Array:
  """3x3 max pool (padding with -inf, like PyTorch's `F.max_pool2d`)."""
  return nn.max_pool(x_bhwc, (3, 3), strides=(stride, stride),
                     padding=((pad, pad), (pad, pad)))


class BasicConv2d(nn.Module):
  """torchvision's BasicConv2d: bias-free conv -> BatchNorm(eps 1e-3) -> ReLU.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)) zero padding.
    precision: convolution precision.
  """
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int] = (1, 1)
  padding: tuple[Padding, Padding] = ((0, 0), (0, 0))
  precision: Any = None

  @nn.compact
  def __call__(self, x_bhwc: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel_size, strides=self.strides,
                padding=self.padding, use_bias=False, precision=self.precision,
                name="conv")(x_bhwc)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def _pad(ph: int, pw: int) -> tuple[Padding, Padding]:
  return ((ph, ph), (pw, pw))


class _Block(nn.Module):
  """Base of the Inception blocks: a `conv` factory with shared precision."""
  precision: Any = None

  def conv(self, name: str, features: int, kernel: tuple[int, int],
           stride: int = 1, pad: tuple[int, int] = (0, 0)) -> BasicConv2d:
    return BasicConv2d(features, kernel, strides=(stride, stride), padding=_pad(*pad),
                       precision=self.precision, name=name)


class FIDInceptionA(_Block):
  """Mixed_5b/5c/5d (35x35): (B, 35, 35, C) -> (B, 35, 35, 224 + pool_features)."""
  pool_features: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv("branch1x1", 64, (1, 1))(x)
    b5 = self.conv("branch5x5_1", 48, (1, 1))(x)
    b5 = self.conv("branch5x5_2", 64, (5, 5), pad=(2, 2))(b5)
    b3 = self.conv("branch3x3dbl_1", 64, (1, 1))(x)
    b3 = self.conv("branch3x3dbl_2", 96, (3, 3), pad=(1, 1))(b3)
    b3 = self.conv("branch3x3dbl_3", 96, (3, 3), pad=(1, 1))(b3)
    bp = self.conv("branch_pool", self.pool_features, (1, 1))(
        avg_pool_3x3_exclude_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
  """Mixed_6a (grid reduction): (B, 35, 35, 288) -> (B, 17, 17, 768)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3", 384, (3, 3), stride=2)(x)
    bd = self.conv("branch3x3dbl_1", 64, (1, 1))(x)
    bd = self.conv("branch3x3dbl_2", 96, (3, 3), pad=(1, 1))(bd)
    bd = self.conv("branch3x3dbl_3", 96, (3, 3), stride=2)(bd)
    return jnp.concatenate([b3, bd, max_pool_3x3(x, 2)], axis=-1)


class FIDInceptionC(_Block):
  """Mixed_6b-6e (17x17, factorised 7x7): (B, 17, 17, 768) -> (B, 17, 17, 768)."""
  channels_7x7: int = 128

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c7 = self.channels_7x7
    b1 = self.conv("branch1x1", 192, (1, 1))(x)
    b7 = self.conv("branch7x7_1", c7, (1, 1))(x)
    b7 = self.conv("branch7x7_2", c7, (1, 7), pad=(0, 3))(b7)
    b7 = self.conv("branch7x7_3", 192, (7, 1), pad=(3, 0))(b7)
    bd = self.conv("branch7x7dbl_1", c7, (1, 1))(x)
    bd = self.conv("branch7x7dbl_2", c7, (7, 1), pad=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_3", c7, (1, 7), pad=(0, 3))(bd)
    bd = self.conv("branch7x7dbl_4", c7, (7, 1), pad=(3, 0))(bd)
    bd = self.conv("branch7x7dbl_5", 192, (1, 7), pad=(0, 3))(bd)
    bp = self.conv("branch_pool", 192, (1, 1))(avg_pool_3x3_exclude_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
  """Mixed_7a (grid reduction): (B, 17, 17, 768) -> (B, 8, 8, 1280)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b3 = self.conv("branch3x3_1", 192, (1, 1))(x)
    b3 = self.conv("branch3x3_2", 320, (3, 3), stride=2)(b3)
    b7 = self.conv("branch7x7x3_1", 192, (1, 1))(x)
    b7 = self.conv("branch7x7x3_2", 192, (1, 7), pad=(0, 3))(b7)
    b7 = self.conv("branch7x7x3_3", 192, (7, 1), pad=(3, 0))(b7)
    b7 = self.conv("branch7x7x3_4", 192, (3, 3), stride=2)(b7)
    return jnp.concatenate([b3, b7, max_pool_3x3(x, 2)], axis=-1)


class FIDInceptionE(_Block):
  """Mixed_7b (`pool='avg'`, FIDInceptionE_1) / Mixed_7c (`pool='max'`, E_2).

  (B, 8, 8, C) -> (B, 8, 8, 2048).
  """
  pool: str = "avg"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b1 = self.conv("branch1x1", 320, (1, 1))(x)
    b3 = self.conv("branch3x3_1", 384, (1, 1))(x)
    b3 = jnp.concatenate([
        self.conv("branch3x3_2a", 384, (1, 3), pad=(0, 1))(b3),
        self.conv("branch3x3_2b", 384, (3, 1), pad=(1, 0))(b3)], axis=-1)
    bd = self.conv("branch3x3dbl_1", 448, (1, 1))(x)
    bd = self.conv("branch3x3dbl_2", 384, (3, 3), pad=(1, 1))(bd)
    bd = jnp.concatenate([
        self.conv("branch3x3dbl_3a", 384, (1, 3), pad=(0, 1))(bd),
        self.conv("branch3x3dbl_3b", 384, (3, 1), pad=(1, 0))(bd)], axis=-1)
    if self.pool == "avg":
      pooled = avg_pool_3x3_exclude_pad(x)
    elif self.pool == "max":  # pytorch-fid's FIDInceptionE_2 (TF graph's quirk).
      pooled = max_pool_3x3(x, 1, pad=1)
    else:
      raise ValueError(f"Unknown pool {self.pool!r}: use 'avg' or 'max'.")
    bp = self.conv("branch_pool", 192, (1, 1))(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(_Block):
  """pytorch-fid's FID InceptionV3: images in [-1, 1] -> pool3 features (B, 2048).

  Variables: `params` and `batch_stats` (BatchNorm running statistics), converted
  from pytorch-fid's weights by `cnnjax.models.inception_weights`.

  Attributes:
    resize_input: resize to 299x299 first, as pytorch-fid does (bilinear, no
      antialiasing). Without it the input must still be at least 75x75.
    precision: convolution/matmul precision; HIGHEST by default so that features
      do not depend on the accelerator's reduced-precision float32 modes.
  """
  resize_input: bool = True
  precision: Any = jax.lax.Precision.HIGHEST

  @nn.compact
  def __call__(self, images_bhwc: jax.Array, return_logits: bool = False
               ) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Runs the network in inference mode.

    Args:
      images_bhwc: images in [-1, 1], shape (B, H, W, C), C in {1, 3}.
      return_logits: also return the TF graph's 1008 class logits (`fc`).

    Returns:
      pool3 features, shape (B, 2048); with `return_logits`, the pair
      (features (B, 2048), logits (B, 1008)).
    """
    x = fid_preprocess(images_bhwc, resize=self.resize_input)
    if min(x.shape[1:3]) < 75:
      raise ConfigError(f"InceptionV3 needs images of at least 75x75, got "
                        f"{x.shape[1]}x{x.shape[2]}: keep resize_input=True.")
    p = self.precision
    x = self.conv("Conv2d_1a_3x3", 32, (3, 3), stride=2)(x)    # 149x149x32
    x = self.conv("Conv2d_2a_3x3", 32, (3, 3))(x)              # 147x147x32
    x = self.conv("Conv2d_2b_3x3", 64, (3, 3), pad=(1, 1))(x)  # 147x147x64
    x = max_pool_3x3(x, 2)                                     # 73x73x64
    x = self.conv("Conv2d_3b_1x1", 80, (1, 1))(x)              # 73x73x80
    x = self.conv("Conv2d_4a_3x3", 192, (3, 3))(x)             # 71x71x192
    x = max_pool_3x3(x, 2)                                     # 35x35x192
    x = FIDInceptionA(pool_features=32, precision=p, name="Mixed_5b")(x)  # 256
    x = FIDInceptionA(pool_features=64, precision=p, name="Mixed_5c")(x)  # 288
    x = FIDInceptionA(pool_features=64, precision=p, name="Mixed_5d")(x)  # 288
    x = InceptionB(precision=p, name="Mixed_6a")(x)          # 17x17x768
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                     ("Mixed_6e", 192)):
      x = FIDInceptionC(channels_7x7=c7, precision=p, name=name)(x)
    x = InceptionD(precision=p, name="Mixed_7a")(x)          # 8x8x1280
    x = FIDInceptionE(pool="avg", precision=p, name="Mixed_7b")(x)  # 8x8x2048
    x = FIDInceptionE(pool="max", precision=p, name="Mixed_7c")(x)  # 8x8x2048
    features_bd = jnp.mean(x, axis=(1, 2))                   # pool3: (B, 2048)
    if not return_logits:
      return features_bd
    logits_bk = nn.Dense(NUM_CLASSES, precision=p, name="fc")(features_bd)
    return features_bd, logits_bk


# ------------------------------------------ pytorch-fid state dict <-> Flax variables


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One state-dict tensor and where it goes in the Flax variables."""
  collection: str            # 'params' or 'batch_stats'.
  flax_path: tuple[str, ...]
  torch_shape: tuple[int, ...]
  to_flax: Callable[[np.ndarray], np.ndarray]


_FLAX_TO_TORCH_LEAF = {("conv", "kernel"): "weight", ("bn", "scale"): "weight",
                       ("bn", "bias"): "bias", ("bn", "mean"): "running_mean",
                       ("bn", "var"): "running_var", ("fc", "kernel"): "weight",
                       ("fc", "bias"): "bias"}


@functools.cache
def _entries() -> dict[str, _Entry]:
  """State-dict key -> entry, derived from the Flax module's variable shapes."""
  shapes = jax.eval_shape(lambda: InceptionV3(resize_input=False).init(
      jax.random.key(0), jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3)),
      return_logits=True))
  entries = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in traverse_util.flatten_dict(shapes[collection]).items():
      key = ".".join(path[:-1] + (_FLAX_TO_TORCH_LEAF[path[-2:]],))
      shape = tuple(leaf.shape)
      if path[-2:] == ("conv", "kernel"):  # HWIO <- OIHW.
        shape = (shape[3], shape[2], shape[0], shape[1])
        to_flax = lambda w: w.transpose(2, 3, 1, 0)
      elif path[-2:] == ("fc", "kernel"):  # (in, out) <- (out, in).
        shape, to_flax = shape[::-1], np.transpose
      else:
        to_flax = lambda w: w
      entries[key] = _Entry(collection, path, shape, to_flax)
  return dict(sorted(entries.items()))


def torch_state_dict_shapes() -> dict[str, tuple[int, ...]]:
  """pytorch-fid's FID Inception state dict: key -> shape (PyTorch layout).

  `num_batches_tracked` buffers are optional and ignored.
  """
  return {key: entry.torch_shape for key, entry in _entries().items()}


def validate_state_dict(state: dict[str, np.ndarray], source: Any) -> dict[str, np.ndarray]:
  """Checks every key and shape; returns the needed tensors as float32.

  Raises:
    CheckpointError: naming the first missing, mis-shaped, non-float or unexpected
      tensor of `source`.
  """
  entries = _entries()
  missing = [key for key in entries if key not in state]
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise CheckpointError(
        f"{source} lacks tensor {missing[0]!r} of shape {entries[missing[0]].torch_shape}"
        f"{more}: it is not pytorch-fid's FID Inception state dict ({PT_INCEPTION_FILENAME}).")
  extra = [key for key in state if key not in entries and not key.endswith(_IGNORED_SUFFIX)]
  if extra:
    raise CheckpointError(
        f"{source} has unexpected tensor {extra[0]!r} ({len(extra)} unexpected in all): "
        f"it is not pytorch-fid's FID Inception state dict ({PT_INCEPTION_FILENAME}).")
  result = {}
  for key, entry in entries.items():
    value = state[key]
    if tuple(value.shape) != entry.torch_shape:
      raise CheckpointError(
          f"{source}: tensor {key!r} has shape {tuple(value.shape)}, expected "
          f"{entry.torch_shape}: use pytorch-fid's FID Inception weights.")
    if not np.issubdtype(value.dtype, np.floating) and value.dtype != jnp.bfloat16:
      raise CheckpointError(f"{source}: tensor {key!r} has dtype {value.dtype}, "
                            "expected floating point: use pytorch-fid's weights.")
    result[key] = np.asarray(value, np.float32)
  return result


def state_dict_to_variables(state: dict[str, np.ndarray]) -> dict[str, Any]:
  """Maps a validated state dict to InceptionV3's {'params', 'batch_stats'}."""
  flat = {}
  for key, entry in _entries().items():
    flat[(entry.collection, *entry.flax_path)] = np.ascontiguousarray(
        entry.to_flax(state[key]))
  return traverse_util.unflatten_dict(flat)
