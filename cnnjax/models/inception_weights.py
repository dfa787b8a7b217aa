"""pytorch-fid's FID Inception weights: safe reading, one-time conversion, loading.

The published `pt_inception-2015-12-05-6726825d.pth` is a pickled PyTorch state dict,
and unpickling can run code, so it is never `pickle.load`ed: a restricted unpickler
(no torch needed) refuses every global but torch's tensor-rebuild functions, storage
types and `collections.OrderedDict`, and builds numpy arrays. Both torch formats are
read: the zip archive (torch >= 1.6) and the legacy stream. `convert_pth_to_npz`
checks every key and shape and writes the tensors once, unchanged (PyTorch names and
layouts, float32), to an `.npz` read back with `allow_pickle=False`;
`load_inception_variables` maps it to Flax (conv OIHW -> HWIO, fc transposed, BN
weight/bias/running_mean/running_var -> scale/bias/mean/var).

Usage:
  extract = build_inception_extractor("/data/pt_inception-2015-12-05-6726825d.pth")
  features_bd = extract(images_bhwc)  # images in [-1, 1] -> (B, 2048)
"""

import collections
import dataclasses
import functools
import hashlib
import os
import pathlib
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import jax
import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CheckpointError
from cnnjax.io.atomic import atomic_write
from cnnjax.models.inception import (PT_INCEPTION_FILENAME, PT_INCEPTION_URL, InceptionV3,
                                     state_dict_to_variables, validate_state_dict)

__all__ = ["PT_INCEPTION_FILENAME", "PT_INCEPTION_URL", "build_inception_extractor",
           "convert_pth_to_npz", "load_inception_variables", "read_npz", "read_pth"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_SOURCE_HASH_KEY = "__source_sha256__"
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "HalfStorage": np.float16, "BFloat16Storage": jnp.bfloat16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}
# What a garbled file makes the readers raise.
_GARBLED = (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError,
            TypeError, KeyError, IndexError, AttributeError, struct.error,
            UnicodeDecodeError, OverflowError, MemoryError, RecursionError)


def _one_line(text: Any) -> str:
  return " ".join(str(text).split())


@dataclasses.dataclass(frozen=True)
class _StorageType:
  """Stands for `torch.FloatStorage` & co. in a pickle."""
  name: str


@dataclasses.dataclass(eq=False)
class _Storage:
  """A flat typed buffer named by `key`; `data` is filled in by the reader."""
  key: str
  dtype: np.dtype
  numel: int
  data: np.ndarray | None = None


@dataclasses.dataclass(eq=False)
class _Tensor:
  """A strided view of a `_Storage`, materialised once the storages are read."""
  storage: _Storage
  offset: int
  shape: tuple[int, ...]
  stride: tuple[int, ...]

  def to_numpy(self) -> np.ndarray:
    data = self.storage.data
    if data is None:
      raise ValueError(f"storage {self.storage.key!r} has no data")
    if not all(isinstance(v, int) and v >= 0 for v in (self.offset, *self.shape,
                                                      *self.stride)):
      raise ValueError(f"bad tensor geometry {self.shape} / {self.stride}")
    if 0 in self.shape:
      return np.zeros(self.shape, data.dtype)
    last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
    if last >= data.size:
      raise ValueError(f"tensor of shape {self.shape} overruns its storage "
                       f"({data.size} elements)")
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], self.shape, [s * data.itemsize for s in self.stride],
        writeable=False)
    return np.array(view, dtype=data.dtype.newbyteorder("="))


def _rebuild_tensor(storage, storage_offset, size, stride, *unused) -> _Tensor:
  """Safe stand-in for `torch._utils._rebuild_tensor(_v2)`."""
  if not isinstance(storage, _Storage):
    raise ValueError("tensor without a storage")
  return _Tensor(storage, storage_offset, tuple(size), tuple(stride))


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): lambda data, *unused: data,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that only builds tensors, dicts and plain values.

  Any other global (a function or class that unpickling would call) is refused
  before it is even imported, so a malicious pickle cannot run code.
  """

  def __init__(self, file: BinaryIO, path: pathlib.Path, little_endian: bool = True):
    super().__init__(file)
    self._path = path
    self._byteorder = "<" if little_endian else ">"
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str) -> Any:
    allowed = _ALLOWED_GLOBALS.get((module, name))
    if allowed is None:
      raise CheckpointError(
          f"{self._path}: refusing to unpickle '{module}.{name}' (only tensors are "
          "loaded, never code): use the published pytorch-fid state dict "
          f"({PT_INCEPTION_URL}).")
    return allowed

  def persistent_load(self, pid: Any) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)):
      raise ValueError(f"unexpected persistent id {str(pid)[:80]}")
    _, storage_type, key, _, numel, *view = pid
    if view and view[0] is not None:
      raise ValueError("storage views are not supported")
    key = str(key)
    if key not in self.storages:
      dtype = np.dtype(_STORAGE_DTYPES[storage_type.name]).newbyteorder(self._byteorder)
      self.storages[key] = _Storage(key, dtype, int(numel))
    return self.storages[key]


def _read_zip(path: pathlib.Path) -> tuple[Any, dict[str, _Storage]]:
  """Reads torch's zip format: `<prefix>/data.pkl` and `<prefix>/data/<key>`."""
  with zipfile.ZipFile(path) as archive:
    names = set(archive.namelist())
    pickles = sorted(n for n in names if n.endswith("data.pkl")
                     and n.count("/") <= 1)
    if not pickles:
      raise ValueError("zip archive without data.pkl")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = (archive.read(prefix + "byteorder").decode().strip()
                 if prefix + "byteorder" in names else "little")
    with archive.open(pickles[0]) as pkl:
      unpickler = _RestrictedUnpickler(pkl, path, byteorder == "little")
      obj = unpickler.load()
    for storage in unpickler.storages.values():
      entry = archive.getinfo(f"{prefix}data/{storage.key}")
      if entry.file_size != storage.numel * storage.dtype.itemsize:
        raise ValueError(f"storage {storage.key!r} has {entry.file_size} bytes, "
                         f"expected {storage.numel * storage.dtype.itemsize}")
      storage.data = np.frombuffer(archive.read(entry), storage.dtype)
  return obj, unpickler.storages


def _read_legacy(path: pathlib.Path) -> tuple[Any, dict[str, _Storage]]:
  """Reads torch's pre-1.6 stream format (magic, version, sys info, pickles, data)."""
  with open(path, "rb") as f:
    plain = lambda: _RestrictedUnpickler(f, path).load()
    if plain() != _LEGACY_MAGIC or plain() != _LEGACY_PROTOCOL:
      raise ValueError("bad magic number or protocol version")
    sys_info = plain()
    little_endian = bool(sys_info.get("little_endian", True))
    unpickler = _RestrictedUnpickler(f, path, little_endian)
    obj = unpickler.load()
    keys = plain()
    remaining = os.fstat(f.fileno()).st_size - f.tell()
    for key in keys:
      storage = unpickler.storages[str(key)]
      (numel,) = struct.unpack("<q" if little_endian else ">q", f.read(8))
      nbytes = numel * storage.dtype.itemsize
      remaining -= 8 + nbytes
      if numel != storage.numel or numel < 0 or remaining < 0:
        raise ValueError(f"storage {key!r} is truncated or has the wrong size")
      storage.data = np.frombuffer(f.read(nbytes), storage.dtype)
  return obj, unpickler.storages


def read_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a PyTorch state dict file without executing any code from it.

  Args:
    path: a `torch.save`d dict of tensors (zip or legacy format).

  Returns:
    The tensors as numpy arrays (native byte order), by state-dict key.

  Raises:
    CheckpointError: missing file, not a PyTorch file, garbled content, or a
      pickle that references anything but tensors.
  """
  path = _existing(path)
  try:
    reader = _read_zip if zipfile.is_zipfile(path) else _read_legacy
    obj, _ = reader(path)
    if not isinstance(obj, dict):
      raise ValueError(f"top-level object is a {type(obj).__name__}, not a dict")
    state = {}
    for key, value in obj.items():
      if not isinstance(value, _Tensor):
        raise ValueError(f"entry {key!r} is a {type(value).__name__}, not a tensor")
      state[str(key)] = value.to_numpy()
    return state
  except _GARBLED as e:
    raise CheckpointError(
        f"{path} is not a readable PyTorch state dict ({type(e).__name__}: "
        f"{_one_line(e)}): re-download {PT_INCEPTION_URL}.") from None


def _existing(path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(path).expanduser()
  if not path.is_file():
    raise CheckpointError(
        f"Inception weight file {path} does not exist: download {PT_INCEPTION_URL} "
        "and point the config at the local copy (or at its converted .npz).")
  return path


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def convert_pth_to_npz(pth_path: str | os.PathLike,
                       npz_path: str | os.PathLike | None = None) -> pathlib.Path:
  """Converts the `.pth` once to a pickle-free `.npz` (PyTorch names and layouts).

  Args:
    pth_path: pytorch-fid's weight file.
    npz_path: output; default: next to `pth_path`, with suffix `.npz`.

  Returns:
    The `.npz` path (written atomically).

  Raises:
    CheckpointError: unreadable or mismatched weights, or an unwritable output.
  """
  pth_path = _existing(pth_path)
  npz_path = pathlib.Path(npz_path or pth_path.with_suffix(".npz")).expanduser()
  _convert(pth_path, npz_path)
  return npz_path


def _convert(pth_path: pathlib.Path, npz_path: pathlib.Path) -> dict[str, np.ndarray]:
  """Validates the `.pth`, writes the `.npz`; returns the validated state dict."""
  state = validate_state_dict(read_pth(pth_path), pth_path)
  try:
    npz_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(str(npz_path), "wb") as file:
      np.savez(file, **state, **{_SOURCE_HASH_KEY: np.array(_sha256(pth_path))})
  except OSError as e:
    raise CheckpointError(
        f"Cannot write converted Inception weights to {npz_path} ({_one_line(e)}): "
        "give a writable converted path.") from None
  return state


def read_npz(npz_path: str | os.PathLike) -> tuple[dict[str, np.ndarray], str | None]:
  """Reads a converted `.npz` (no pickles): (validated state dict, source sha256)."""
  npz_path = _existing(npz_path)
  try:
    with np.load(npz_path, allow_pickle=False) as npz:
      arrays = {key: npz[key] for key in npz.files}
  except _GARBLED as e:
    raise CheckpointError(
        f"{npz_path} is not a readable .npz of Inception weights ({type(e).__name__}: "
        f"{_one_line(e)}): delete it and convert the .pth again.") from None
  source = arrays.pop(_SOURCE_HASH_KEY, None)
  return validate_state_dict(arrays, npz_path), None if source is None else str(source)


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
  weights_path = _existing(weights_path)
  if weights_path.suffix == ".npz" or (zipfile.is_zipfile(weights_path)
                                       and not _has_data_pkl(weights_path)):
    state, _ = read_npz(weights_path)
    return state_dict_to_variables(state)
  npz_path = pathlib.Path(converted_path or weights_path.with_suffix(".npz")).expanduser()
  if npz_path.is_file():
    try:
      state, source = read_npz(npz_path)
      if source == _sha256(weights_path):
        return state_dict_to_variables(state)
    except CheckpointError:
      pass  # A damaged conversion: make it again.
  return state_dict_to_variables(_convert(weights_path, npz_path))


def _has_data_pkl(path: pathlib.Path) -> bool:
  """Whether a zip file is a torch archive rather than an `.npz`."""
  try:
    with zipfile.ZipFile(path) as archive:
      return any(n.endswith("data.pkl") for n in archive.namelist())
  except _GARBLED + (OSError,):
    return False


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
