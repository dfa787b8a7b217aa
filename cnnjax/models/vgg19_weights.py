"""torchvision's VGG19 weights from a local file: safe reading, one-time conversion.

The weights are torchvision's `vgg19-dcbb9e9d.pth` (the ImageNet state dict of
`torchvision.models.vgg19(weights="IMAGENET1K_V1")`), which this project never downloads:
put the file anywhere and point `features.weights_path` at it. It is a pickle, and
unpickling can run code, so it is read by `weight_cache.read_pth`'s restricted
unpickler, which refuses every global but torch's tensor rebuilders (no torch needed). A
`.safetensors` file with the same keys is read too when the `safetensors` package is
installed (it is not a dependency of this project).

The `features.{index}.weight` / `.bias` tensors are checked (every key of the sixteen
convolutions, with its shape; the classifier's keys are dropped) and written once,
unchanged (PyTorch names and OIHW layouts, float32), to an `.npz` beside the source (or
at `converted_path`), which later loads read with `allow_pickle=False`. It is rewritten
when the source file changes (its sha256 is stored). `load_vgg19_params` maps it to Flax
(`conv{b}_{i}/kernel` HWIO, `conv{b}_{i}/bias`).
"""

import os
import pathlib
from typing import Any

import numpy as np

from cnnjax.errors import CheckpointError
from cnnjax.models import weight_cache
from cnnjax.models.vgg19 import CONVOLUTIONS

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
_WHERE = (f"put torchvision's {VGG19_FILENAME} (the ImageNet VGG19 state dict) there, or "
          "set --config.features.weights_path to its path (or use "
          "--config.features.network=random, which needs no file).")


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """State-dict key -> shape of every `features` tensor of torchvision's vgg19."""
  shapes = {}
  for index, in_channels, out_channels in CONVOLUTIONS.values():
    shapes[f"features.{index}.weight"] = (out_channels, in_channels, 3, 3)
    shapes[f"features.{index}.bias"] = (out_channels,)
  return shapes


def validate_state_dict(state: dict[str, np.ndarray],
                        path: pathlib.Path) -> dict[str, np.ndarray]:
  """Checks keys and shapes; returns the `features` tensors as float32.

  Raises:
    CheckpointError: a missing key, a wrong shape, or a non-numeric tensor.
  """
  shapes = expected_shapes()
  missing = [key for key in shapes if key not in state]
  if missing:
    raise CheckpointError(f"{path} is not torchvision's VGG19 state dict: {len(missing)} "
                          f"keys are missing (first {missing[0]!r}); " + _WHERE)
  checked = {}
  for key, shape in shapes.items():
    array = np.asarray(state[key])
    if tuple(array.shape) != shape or not np.issubdtype(array.dtype, np.floating):
      raise CheckpointError(f"{path}: {key} is {array.dtype}{list(array.shape)}, expected "
                            f"float{list(shape)}: not torchvision's VGG19; " + _WHERE)
    checked[key] = array.astype(np.float32)
  return checked


def _read_source(path: pathlib.Path) -> dict[str, np.ndarray]:
  """The state dict of a `.pth` (restricted unpickler) or `.safetensors` file."""
  if path.suffix == ".safetensors":
    return weight_cache.read_safetensors(path, _WHERE)
  return weight_cache.read_pth(path, _WHERE)


_WEIGHTS = weight_cache.WeightCache(
    name="VGG19", read_source=_read_source, validate=validate_state_dict, where=_WHERE,
    unwritable_fix="make its directory writable or set --config.features.converted_path.")


# (npz_path) -> (validated state dict, source sha256); see `weight_cache.WeightCache`.
read_npz = _WEIGHTS.read_npz
# (weights_path, npz_path=None) -> the `.npz` path (default: beside the source).
convert_to_npz = _WEIGHTS.convert_to_npz
# (weights_path, converted_path=None) -> the validated `features` tensors; the source
# (`.pth`, `.safetensors`) is converted once to `converted_path` (default: beside it).
load_state_dict = _WEIGHTS.load


def state_dict_to_params(state: dict[str, np.ndarray]) -> dict[str, Any]:
  """torchvision `features.{i}.weight` OIHW / `.bias` -> {'params': {conv: HWIO, bias}}."""
  params = {}
  for name, (index, _, _) in CONVOLUTIONS.items():
    params[name] = {"kernel": np.transpose(state[f"features.{index}.weight"], (2, 3, 1, 0)),
                    "bias": state[f"features.{index}.bias"]}
  return {"params": params}


def load_vgg19_params(weights_path: str | os.PathLike,
                      converted_path: str | os.PathLike | None = None) -> dict[str, Any]:
  """`VGG19Features` variables from torchvision's weights (see `load_state_dict`)."""
  return state_dict_to_params(load_state_dict(weights_path, converted_path))
