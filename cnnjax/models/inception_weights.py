"""pytorch-fid's FID Inception weights: safe reading, one-time conversion, loading.

The published `pt_inception-2015-12-05-6726825d.pth` is a pickled PyTorch state dict,
read without running any code from it by `weight_cache.read_pth`'s restricted
unpickler (no torch needed). `convert_pth_to_npz` checks every key and shape and
writes the tensors once, unchanged (PyTorch names and layouts, float32), to an `.npz`
read back with `allow_pickle=False`; `load_inception_variables` maps it to Flax (conv
OIHW -> HWIO, fc transposed, BN weight/bias/running_mean/running_var ->
scale/bias/mean/var).

Usage:
  extract = build_inception_extractor("/data/pt_inception-2015-12-05-6726825d.pth")
  features_bd = extract(images_bhwc)  # images in [-1, 1] -> (B, 2048)
"""

import functools
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from cnnjax.models import weight_cache
from cnnjax.models.inception import (PT_INCEPTION_FILENAME, PT_INCEPTION_URL, InceptionV3,
                                     state_dict_to_variables, validate_state_dict)

__all__ = ["PT_INCEPTION_FILENAME", "PT_INCEPTION_URL", "build_inception_extractor",
           "convert_pth_to_npz", "load_inception_variables", "read_npz", "read_pth"]

_WEIGHTS = weight_cache.WeightCache(
    name="Inception",
    read_source=lambda path: read_pth(path),  # Looked up at call time (tests patch it).
    validate=validate_state_dict,
    where=(f"download {PT_INCEPTION_URL} and point the config at the local copy (or at "
           "its converted .npz)."),
    unwritable_fix="give a writable converted path.")


def read_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The tensors (numpy, by key) of a `torch.save`d dict, read without running code.

  Raises:
    CheckpointError: missing, garbled or not a PyTorch file, or an unsafe pickle.
  """
  return weight_cache.read_pth(_WEIGHTS.existing(path), f"re-download {PT_INCEPTION_URL}.")


def convert_pth_to_npz(pth_path: str | os.PathLike,
                       npz_path: str | os.PathLike | None = None) -> pathlib.Path:
  """Converts the `.pth` once to a pickle-free `.npz` (default: beside it); its path."""
  return _WEIGHTS.convert_to_npz(pth_path, npz_path)


read_npz = _WEIGHTS.read_npz  # (npz_path) -> (validated state dict, source sha256).


def load_inception_variables(weights_path: str | os.PathLike,
                             converted_path: str | os.PathLike | None = None
                             ) -> dict[str, Any]:
  """Loads InceptionV3 variables from the `.pth` (converting it once) or an `.npz`.

  Args:
    weights_path: pytorch-fid's `.pth`, or an `.npz` made by `convert_pth_to_npz`.
    converted_path: where the `.pth`'s conversion lives (default: next to it, suffix
      `.npz`). It is (re)written when absent or made from a different `.pth`.

  Returns:
    {'params': ..., 'batch_stats': ...} for `InceptionV3.apply`, numpy float32.

  Raises:
    CheckpointError: see `read_pth`, `validate_state_dict`, `convert_pth_to_npz`.
  """
  return state_dict_to_variables(_WEIGHTS.load(weights_path, converted_path))


def build_inception_extractor(
    weights_path: str | os.PathLike, *,
    converted_path: str | os.PathLike | None = None, return_logits: bool = False,
    resize_input: bool = True, precision: Any = jax.lax.Precision.HIGHEST,
) -> Callable[[jax.Array], jax.Array | tuple[jax.Array, jax.Array]]:
  """A jitted function: images in [-1, 1] (B, H, W, 1 or 3) -> features (B, 2048).

  With `return_logits`, it returns (features (B, 2048), logits (B, 1008)). The
  weights are passed as an argument (not baked into the program as constants).
  """
  model = InceptionV3(resize_input=resize_input, precision=precision)
  variables = jax.device_put(load_inception_variables(weights_path, converted_path))
  apply = jax.jit(functools.partial(model.apply, return_logits=return_logits))
  return functools.partial(apply, variables)
