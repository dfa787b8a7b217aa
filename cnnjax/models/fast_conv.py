"""Strided convolution whose *second* derivatives avoid XLA's slow lhs-dilated path.

The input gradient of a strided convolution is an lhs-dilated (transposed)
convolution; differentiating that in the kernel, as a gradient penalty (WGAN-GP, R1)
does when it back-propagates ||dD/dx||^2 into D's weights, hits XLA's pathologically
slow kernel gradient of lhs-dilated convolutions on CPU (jax-ml/jax#23783): 27x the
first-order cost for a 14x14x64 -> 7x7x128 layer here. `strided_conv` computes
`lax.conv_general_dilated` exactly, with a `jax.custom_vjp` whose input gradient is
`conv_input_gradient`, a `jax.custom_jvp` function whose kernel tangent is written so
that reverse mode runs the fast window-dilated form (the trick of
`cnnjax.models.upsample.conv_transpose_kernel_tangent`). Use it as
`nn.Conv(..., conv_general_dilated=strided_conv)`: parameters are unchanged. Reverse
mode of any order and vmap work; forward mode (`jax.jvp`) through it does not.

On CPU the input gradient itself is computed as the transpose of
`space_to_depth_conv`, the same strided convolution written as a stride-1 convolution
of the space-to-depth input: a stride-1 convolution and a depth-to-space, which XLA:CPU
runs 2.9x faster than the lhs-dilated convolution lax's transpose rule emits (16x16x64
<- 8x8x128, batch 128). The forward pass and the kernel gradient stay lax's, bit for
bit; the input gradient equals lax's to float rounding. Other platforms use lax's.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax


def channels_last_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  """flax's layout for `ndim`-D arrays: (batch, *spatial, feature) inputs and outputs,
  (*spatial, in, out) kernels."""
  spatial = tuple(range(1, ndim - 1))
  return lax.ConvDimensionNumbers((0, ndim - 1) + spatial,
                                  (ndim - 1, ndim - 2) + tuple(range(ndim - 2)),
                                  (0, ndim - 1) + spatial)


def space_to_depth_conv(x_bsc: jax.Array, kernel_sio: jax.Array, strides: Sequence[int],
                        padding: Sequence[tuple[int, int]], precision=None) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, strides, padding)`, channels-last, as a
  stride-1 convolution of the space-to-depth input.

  The input is padded (negative pads crop), cut or zero-extended to a whole number of
  stride blocks, and its blocks folded into channels; the kernel is zero-extended to a
  multiple of the stride and folded the same way: a window of `ceil(taps / stride)`
  blocks, with no dilation anywhere. Its transpose in `x` (what reverse mode runs) is
  therefore a stride-1 convolution and a depth-to-space.

  Args:
    x_bsc: (batch, *spatial, in).
    kernel_sio: (*taps, in, out).
    strides: window strides, one per spatial dimension.
    padding: (low, high) pads per spatial dimension.
    precision: as lax's.

  Returns:
    (batch, *spatial_out, out), equal to lax's strided convolution.
  """
  num_spatial = x_bsc.ndim - 2
  taps = kernel_sio.shape[:num_spatial]
  zero = jnp.zeros((), x_bsc.dtype)
  x_bsc = lax.pad(x_bsc, zero, [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding),
                                (0, 0, 0)])
  outs = [(n - t) // s + 1 for n, t, s in zip(x_bsc.shape[1:-1], taps, strides)]
  blocks = [-(-t // s) for t, s in zip(taps, strides)]  # The window, in stride blocks.
  sizes = [(o + b - 1) * s for o, b, s in zip(outs, blocks, strides)]
  x_bsc = lax.pad(x_bsc, zero, [(0, 0, 0), *((0, size - n, 0) for size, n in
                                             zip(sizes, x_bsc.shape[1:-1])), (0, 0, 0)])
  batch, channels = x_bsc.shape[0], x_bsc.shape[-1]
  # (b, n1/s1, s1, n2/s2, s2, c) -> (b, n1/s1, n2/s2, s1, s2, c) -> fold (s1, s2, c).
  x_bsc = x_bsc.reshape(batch, *(d for size, s in zip(sizes, strides)
                                 for d in (size // s, s)), channels)
  x_bsc = x_bsc.transpose(0, *range(1, 2 * num_spatial, 2),
                          *range(2, 2 * num_spatial + 1, 2), 2 * num_spatial + 1)
  x_bsc = x_bsc.reshape(batch, *(size // s for size, s in zip(sizes, strides)),
                        math.prod(strides) * channels)
  features = kernel_sio.shape[-1]
  kernel_sio = jnp.pad(kernel_sio, [(0, b * s - t) for b, s, t in
                                    zip(blocks, strides, taps)] + [(0, 0), (0, 0)])
  kernel_sio = kernel_sio.reshape(*(d for b, s in zip(blocks, strides) for d in (b, s)),
                                  channels, features)
  kernel_sio = kernel_sio.transpose(*range(0, 2 * num_spatial, 2),
                                    *range(1, 2 * num_spatial, 2),
                                    2 * num_spatial, 2 * num_spatial + 1)
  kernel_sio = kernel_sio.reshape(*blocks, math.prod(strides) * channels, features)
  return lax.conv_general_dilated(x_bsc, kernel_sio, (1,) * num_spatial, "VALID",
                                  dimension_numbers=channels_last_numbers(x_bsc.ndim),
                                  precision=precision)


def transposed_conv_by_space_to_depth(x_bsc: jax.Array, kernel_sio: jax.Array,
                                      strides: Sequence[int],
                                      pads: Sequence[tuple[int, int]],
                                      precision=None) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, 1, pads, lhs_dilation=strides)` (the
  transposed convolution of `lax.conv_transpose`), channels-last, without lhs dilation.

  It is the adjoint of a strided convolution with the spatially flipped kernel, its
  input and output features swapped and pads `taps - 1 - pad`; that adjoint is taken
  of `space_to_depth_conv`, so this runs a stride-1 convolution and a depth-to-space.

  Args:
    x_bsc: (batch, *spatial, in).
    kernel_sio: (*taps, in, out).
    strides: the lhs dilation (the upsampling factors).
    pads: (low, high) pads of the dilated input, per spatial dimension.
    precision: as lax's.

  Returns:
    (batch, *spatial_out, out), equal to lax's to float rounding.
  """
  num_spatial = x_bsc.ndim - 2
  taps = kernel_sio.shape[:num_spatial]
  y_like = jax.eval_shape(lambda x: lax.conv_general_dilated(
      x, kernel_sio, (1,) * num_spatial, pads, lhs_dilation=strides,
      dimension_numbers=channels_last_numbers(x.ndim)), x_bsc)
  adjoint_kernel = jnp.swapaxes(jnp.flip(kernel_sio, tuple(range(num_spatial))), -1, -2)
  adjoint_pads = [(t - 1 - lo, t - 1 - hi) for t, (lo, hi) in zip(taps, pads)]
  return jax.linear_transpose(
      lambda y: space_to_depth_conv(y, adjoint_kernel, strides, adjoint_pads, precision),
      y_like)(x_bsc)[0]


def _conv(x, kernel, config):
  window_strides, padding, dimension_numbers, precision = config
  return lax.conv_general_dilated(x, kernel, window_strides, padding,
                                  dimension_numbers=dimension_numbers, precision=precision)


def _lax_input_gradient(cotangent, kernel, x_like, config):
  return jax.linear_transpose(lambda x: _conv(x, kernel, config), x_like)(cotangent)[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv_input_gradient(cotangent, kernel, x_like, config):
  """The input gradient of `_conv(., kernel)` at `cotangent`.

  On CPU, for channels-last convolutions, the transpose of `space_to_depth_conv`;
  elsewhere lax's transpose (an lhs-dilated convolution).

  Args:
    cotangent: the convolution's output cotangent.
    kernel: its kernel.
    x_like: `jax.ShapeDtypeStruct` of its input.
    config: (window_strides, padding, dimension_numbers, precision), hashable.
  """
  window_strides, padding, numbers, precision = config
  if numbers != channels_last_numbers(len(numbers.lhs_spec)):
    return _lax_input_gradient(cotangent, kernel, x_like, config)

  def space_to_depth(cotangent, kernel):
    return jax.linear_transpose(
        lambda x: space_to_depth_conv(x, kernel, window_strides, padding, precision),
        x_like)(cotangent)[0]

  return lax.platform_dependent(
      cotangent, kernel, cpu=space_to_depth,
      default=lambda cotangent, kernel: _lax_input_gradient(cotangent, kernel, x_like,
                                                            config))


@conv_input_gradient.defjvp
def _conv_input_gradient_jvp(x_like, config, primals, tangents):
  cotangent, kernel = primals
  cotangent_dot, kernel_dot = tangents
  out = conv_input_gradient(cotangent, kernel, x_like, config)
  # Linear in the cotangent: lax's form, whose transpose is the strided convolution.
  out_dot = _lax_input_gradient(cotangent_dot, kernel, x_like, config)

  # Linear in the kernel: K(k') = the input gradient with kernel k'. Its transpose
  # maps w (input-shaped) to the kernel gradient of <conv(w, .), cotangent>, a
  # window-dilated convolution; K is written as the transpose of that map, so
  # reverse mode, transposing K, runs it.
  def kernel_gradient(w):
    return jax.linear_transpose(lambda k: _conv(w, k, config), kernel)(cotangent)[0]

  out_dot += jax.linear_transpose(kernel_gradient, x_like)(kernel_dot)[0]
  return out, out_dot


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _strided_conv(x, kernel, config):
  return _conv(x, kernel, config)


def _strided_conv_fwd(x, kernel, config):
  return _conv(x, kernel, config), (x, kernel)


def _strided_conv_bwd(config, residuals, cotangent):
  x, kernel = residuals
  dx = conv_input_gradient(cotangent, kernel, jax.ShapeDtypeStruct(x.shape, x.dtype),
                           config)
  dkernel = jax.linear_transpose(lambda k: _conv(x, k, config), kernel)(cotangent)[0]
  return dx, dkernel


_strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def strided_conv(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                 precision=None, preferred_element_type=None):
  """`lax.conv_general_dilated`, with fast second derivatives for plain strided convs.

  Dilated, grouped or mixed-dtype calls fall back to `lax`.
  """
  plain = ((lhs_dilation is None or all(d == 1 for d in lhs_dilation))
           and (rhs_dilation is None or all(d == 1 for d in rhs_dilation))
           and feature_group_count == 1 and batch_group_count == 1
           and preferred_element_type is None and lhs.dtype == rhs.dtype)
  if not plain:
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, batch_group_count=batch_group_count,
        precision=precision, preferred_element_type=preferred_element_type)
  if isinstance(precision, list):
    precision = tuple(precision)
  numbers = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads([lhs.shape[i] for i in numbers.lhs_spec[2:]],
                                  [rhs.shape[i] for i in numbers.rhs_spec[2:]],
                                  window_strides, padding)
  config = (tuple(window_strides), tuple(tuple(int(p) for p in pair) for pair in padding),
            numbers, precision)
  return _strided_conv(lhs, rhs, config)
