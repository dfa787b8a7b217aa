"""torchvision's VGG19 weights from a local file: safe reading, one-time conversion.

The weights are torchvision's `vgg19-dcbb9e9d.pth` (the ImageNet state dict of
`torchvision.models.vgg19(weights="IMAGENET1K_V1")`), which this project never downloads:
put the file anywhere and point `features.weights_path` at it. It is a pickle, and
unpickling can run code, so it is read by `inception_weights.read_pth`'s restricted
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

import hashlib
import os
import pathlib
import re
import zipfile
from typing import Any

import numpy as np

from cnnjax.errors import CheckpointError
from cnnjax.io.atomic import atomic_write
from cnnjax.models.inception_weights import read_pth
from cnnjax.models.vgg19 import CONVOLUTIONS

VGG19_FILENAME = "vgg19-dcbb9e9d.pth"
_SOURCE_HASH_KEY = "__source_sha256__"
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


def _one_line(text: Any) -> str:
  return " ".join(str(text).split())


def _existing(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path).expanduser()
  if not str(path) or not path.is_file():
    raise CheckpointError(f"VGG19 weight file {str(path) or '(none)'} does not exist: "
                          + _WHERE)
  return path


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
    try:
      from safetensors.numpy import load_file
    except ImportError:
      raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package "
                            "(pip install safetensors), or pass the .pth file.") from None
    try:
      return load_file(str(path))
    except Exception as error:  # noqa: BLE001  (safetensors raises its own types)
      raise CheckpointError(f"{path} is not a readable .safetensors file "
                            f"({type(error).__name__}): " + _WHERE) from None
  try:
    return read_pth(path)
  except CheckpointError as error:
    refused = re.search(r"refusing to unpickle '[^']+'", str(error))
    reason = (f"{refused.group(0)} (only tensors are loaded, never code)" if refused
              else "not a readable PyTorch state dict")
    raise CheckpointError(f"{path}: {reason}; " + _WHERE) from None


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as file:
    for block in iter(lambda: file.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def read_npz(npz_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str | None]:
  """Reads a converted `.npz` (no pickles): (validated state dict, source sha256)."""
  npz_path = _existing(npz_path)
  try:
    with np.load(npz_path, allow_pickle=False) as npz:
      arrays = {key: npz[key] for key in npz.files}
  except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
    raise CheckpointError(f"{npz_path} is not a readable .npz of VGG19 weights "
                          f"({type(error).__name__}): delete it and convert the .pth "
                          "again.") from None
  source = arrays.pop(_SOURCE_HASH_KEY, None)
  return validate_state_dict(arrays, npz_path), None if source is None else str(source)


def convert_to_npz(weights_path: str | os.PathLike,
                   npz_path: str | os.PathLike | None = None) -> pathlib.Path:
  """Converts a `.pth` / `.safetensors` once to a pickle-free `.npz`.

  Args:
    weights_path: torchvision's VGG19 state dict.
    npz_path: output; default: next to `weights_path`, with suffix `.npz`.

  Returns:
    The `.npz` path (written atomically).

  Raises:
    CheckpointError: unreadable or mismatched weights, or an unwritable output.
  """
  weights_path = _existing(weights_path)
  npz_path = pathlib.Path(npz_path or weights_path.with_suffix(".npz")).expanduser()
  _convert(weights_path, npz_path)
  return npz_path


def _convert(source: pathlib.Path, npz_path: pathlib.Path) -> dict[str, np.ndarray]:
  state = validate_state_dict(_read_source(source), source)
  try:
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(str(npz_path), "wb") as file:
      np.savez(file, **state, **{_SOURCE_HASH_KEY: np.array(_sha256(source))})
  except OSError as error:
    raise CheckpointError(f"Cannot write converted VGG19 weights to {npz_path} "
                          f"({_one_line(error)}): make its directory writable or set "
                          "--config.features.converted_path.") from None
  return state


def load_state_dict(weights_path: str | os.PathLike,
                    converted_path: str | os.PathLike | None = None
                    ) -> dict[str, np.ndarray]:
  """The validated `features` tensors, converting the source once to `.npz`.

  Args:
    weights_path: `vgg19-dcbb9e9d.pth`, a `.safetensors` copy, or a converted `.npz`.
    converted_path: where the conversion lives (default: beside the source, suffix
      `.npz`); (re)written when absent, damaged or made from another source file.

  Raises:
    CheckpointError: a missing, unreadable, unsafe or mismatched file (one line).
  """
  weights_path = _existing(weights_path)
  if weights_path.suffix == ".npz":
    return read_npz(weights_path)[0]
  npz_path = pathlib.Path(converted_path or weights_path.with_suffix(".npz")).expanduser()
  if npz_path.is_file():
    try:
      state, source = read_npz(npz_path)
      if source == _sha256(weights_path):
        return state
    except CheckpointError:
      pass  # A damaged conversion: make it again.
  return _convert(weights_path, npz_path)


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
