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
"""

import functools

import jax
from jax import lax


def _conv(x, kernel, config):
  window_strides, padding, dimension_numbers, precision = config
  return lax.conv_general_dilated(x, kernel, window_strides, padding,
                                  dimension_numbers=dimension_numbers, precision=precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv_input_gradient(cotangent, kernel, x_like, config):
  """The input gradient of `_conv(., kernel)` at `cotangent`.

  Args:
    cotangent: the convolution's output cotangent.
    kernel: its kernel.
    x_like: `jax.ShapeDtypeStruct` of its input.
    config: (window_strides, padding, dimension_numbers, precision), hashable.
  """
  return jax.linear_transpose(lambda x: _conv(x, kernel, config), x_like)(cotangent)[0]


@conv_input_gradient.defjvp
def _conv_input_gradient_jvp(x_like, config, primals, tangents):
  cotangent, kernel = primals
  cotangent_dot, kernel_dot = tangents
  out = conv_input_gradient(cotangent, kernel, x_like, config)
  # Linear in the cotangent: JAX's own transpose (a strided convolution) is fast.
  out_dot = conv_input_gradient(cotangent_dot, kernel, x_like, config)

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
