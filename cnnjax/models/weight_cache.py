"""Pretrained PyTorch weights from a local file: safe reading, converted once to `.npz`.

A published `.pth` is a pickled PyTorch state dict, and unpickling can run code, so it
is never `pickle.load`ed: `read_pth`'s restricted unpickler (no torch needed) refuses
every global but torch's tensor-rebuild functions, storage types and
`collections.OrderedDict`, and builds numpy arrays. Both torch formats are read: the
zip archive (torch >= 1.6) and the legacy stream. `read_safetensors` reads the
`.safetensors` format when the optional `safetensors` package is installed.

A `WeightCache` describes one network's weights (its name, its key/shape validator,
where the user should put which file); it validates the source once and writes the
tensors unchanged to an `.npz` (atomically, with the source's sha256), which later
loads read with `allow_pickle=False` until the source changes. Every error is a
one-line `CheckpointError` saying what was wrong and which file to put where.
"""

import collections
import dataclasses
import hashlib
import os
import pathlib
import pickle
import struct
import zipfile
from collections.abc import Callable
from typing import Any, BinaryIO

import jax.numpy as jnp
import numpy as np

from cnnjax.errors import CheckpointError
from cnnjax.io.atomic import atomic_write

StateDict = dict[str, np.ndarray]

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

  def __init__(self, file: BinaryIO, path: pathlib.Path, fix: str,
               little_endian: bool = True):
    super().__init__(file)
    self._path, self._fix = path, fix
    self._byteorder = "<" if little_endian else ">"
    self.storages: dict[str, _Storage] = {}

  def find_class(self, module: str, name: str) -> Any:
    allowed = _ALLOWED_GLOBALS.get((module, name))
    if allowed is None:
      raise CheckpointError(f"{self._path}: refusing to unpickle '{module}.{name}' (only "
                            f"tensors are loaded, never code): {self._fix}")
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


def _read_zip(path: pathlib.Path, fix: str) -> Any:
  """Reads torch's zip format: `<prefix>/data.pkl` and `<prefix>/data/<key>`."""
  with zipfile.ZipFile(path) as archive:
    names = set(archive.namelist())
    pickles = sorted(n for n in names if n.endswith("data.pkl") and n.count("/") <= 1)
    if not pickles:
      raise ValueError("zip archive without data.pkl")
    prefix = pickles[0][:-len("data.pkl")]
    byteorder = (archive.read(prefix + "byteorder").decode().strip()
                 if prefix + "byteorder" in names else "little")
    with archive.open(pickles[0]) as pkl:
      unpickler = _RestrictedUnpickler(pkl, path, fix, byteorder == "little")
      obj = unpickler.load()
    for storage in unpickler.storages.values():
      entry = archive.getinfo(f"{prefix}data/{storage.key}")
      if entry.file_size != storage.numel * storage.dtype.itemsize:
        raise ValueError(f"storage {storage.key!r} has {entry.file_size} bytes, "
                         f"expected {storage.numel * storage.dtype.itemsize}")
      storage.data = np.frombuffer(archive.read(entry), storage.dtype)
  return obj


def _read_legacy(path: pathlib.Path, fix: str) -> Any:
  """Reads torch's pre-1.6 stream format (magic, version, sys info, pickles, data)."""
  with open(path, "rb") as f:
    plain = lambda: _RestrictedUnpickler(f, path, fix).load()
    if plain() != _LEGACY_MAGIC or plain() != _LEGACY_PROTOCOL:
      raise ValueError("bad magic number or protocol version")
    little_endian = bool(plain().get("little_endian", True))
    unpickler = _RestrictedUnpickler(f, path, fix, little_endian)
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
  return obj


def read_pth(path: pathlib.Path, fix: str) -> StateDict:
  """Reads a PyTorch state dict file without executing any code from it.

  Args:
    path: an existing `torch.save`d dict of tensors (zip or legacy format).
    fix: the end of any error message: what the user should do instead.

  Returns:
    The tensors as numpy arrays (native byte order), by state-dict key.

  Raises:
    CheckpointError: not a PyTorch file, garbled content, or a pickle that
      references anything but tensors.
  """
  try:
    obj = (_read_zip if zipfile.is_zipfile(path) else _read_legacy)(path, fix)
    if not isinstance(obj, dict):
      raise ValueError(f"top-level object is a {type(obj).__name__}, not a dict")
    state = {}
    for key, value in obj.items():
      if not isinstance(value, _Tensor):
        raise ValueError(f"entry {key!r} is a {type(value).__name__}, not a tensor")
      state[str(key)] = value.to_numpy()
    return state
  except _GARBLED as e:
    raise CheckpointError(f"{path} is not a readable PyTorch state dict "
                          f"({type(e).__name__}: {_one_line(e)}): {fix}") from None


def read_safetensors(path: pathlib.Path, fix: str) -> StateDict:
  """Reads a `.safetensors` file (with the optional `safetensors` package).

  A missing package or an unreadable file raises a one-line CheckpointError ending in `fix`.
  """
  try:
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise CheckpointError(f"{path}: reading .safetensors needs the safetensors package "
                          "(pip install safetensors), or pass the .pth file.") from None
  try:
    return load_file(str(path))
  except Exception as error:  # noqa: BLE001  (safetensors raises its own types)
    raise CheckpointError(f"{path} is not a readable .safetensors file "
                          f"({type(error).__name__}): {fix}") from None


def source_sha256(path: pathlib.Path) -> str:
  """The hex sha256 of a file, which a conversion records to detect a changed source."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 22), b""):
      digest.update(block)
  return digest.hexdigest()


def _is_npz(path: pathlib.Path) -> bool:
  """Whether `path` is a converted `.npz` (by suffix, or a zip that is no torch archive)."""
  if path.suffix == ".npz":
    return True
  try:
    with zipfile.ZipFile(path) as archive:
      return not any(n.endswith("data.pkl") for n in archive.namelist())
  except _GARBLED + (OSError,):
    return False


@dataclasses.dataclass(frozen=True)
class WeightCache:
  """One network's weights: read from a source file, converted once to a cached `.npz`.

  Attributes:
    name: the network, in messages ("Inception", "VGG19").
    read_source: reads a source file (`.pth`, ...) to a raw state dict; raises a
      one-line `CheckpointError`.
    validate: (raw state dict, path) -> the checked tensors to store (float32);
      raises a one-line `CheckpointError` naming the wrong key or shape.
    where: the end of the missing-file message: which file to put where.
    unwritable_fix: the end of the message for an unwritable `.npz`.
  """
  name: str
  read_source: Callable[[pathlib.Path], StateDict]
  validate: Callable[[StateDict, pathlib.Path], StateDict]
  where: str
  unwritable_fix: str

  def existing(self, path: str | os.PathLike) -> pathlib.Path:
    """`path` (home expanded) if it is a file, else a CheckpointError saying `where`."""
    path = pathlib.Path(path).expanduser()
    if not path.is_file():
      raise CheckpointError(f"{self.name} weight file {path} does not exist: {self.where}")
    return path

  def read_npz(self, npz_path: str | os.PathLike) -> tuple[StateDict, str | None]:
    """Reads a converted `.npz` (no pickles): (validated state dict, source sha256).

    The sha256 is None if not recorded; a bad file raises a one-line CheckpointError.
    """
    npz_path = self.existing(npz_path)
    try:
      with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    except _GARBLED + (OSError,) as e:
      raise CheckpointError(
          f"{npz_path} is not a readable .npz of {self.name} weights ({type(e).__name__}: "
          f"{_one_line(e)}): delete it and convert the .pth again.") from None
    source = arrays.pop(_SOURCE_HASH_KEY, None)
    return self.validate(arrays, npz_path), None if source is None else str(source)

  def convert(self, source: pathlib.Path, npz_path: pathlib.Path) -> StateDict:
    """Reads and validates `source`, writes the `.npz` atomically; returns the tensors."""
    state = self.validate(self.read_source(source), source)
    try:
      npz_path.parent.mkdir(parents=True, exist_ok=True)
      with atomic_write(str(npz_path), "wb") as file:
        np.savez(file, **state, **{_SOURCE_HASH_KEY: np.array(source_sha256(source))})
    except OSError as e:
      raise CheckpointError(f"Cannot write converted {self.name} weights to {npz_path} "
                            f"({_one_line(e)}): {self.unwritable_fix}") from None
    return state

  def convert_to_npz(self, weights_path: str | os.PathLike,
                     npz_path: str | os.PathLike | None = None) -> pathlib.Path:
    """Converts `weights_path` to `npz_path` (default: beside it, suffix `.npz`)."""
    weights_path = self.existing(weights_path)
    npz_path = pathlib.Path(npz_path or weights_path.with_suffix(".npz")).expanduser()
    self.convert(weights_path, npz_path)
    return npz_path

  def load(self, weights_path: str | os.PathLike,
           converted_path: str | os.PathLike | None = None) -> StateDict:
    """The validated tensors of a source file (converting it once) or of an `.npz`.

    Args:
      weights_path: the source file, or an `.npz` made by `convert`.
      converted_path: where the source's conversion lives (default: beside it, suffix
        `.npz`); (re)written when absent, damaged or made from another source file.

    Raises:
      CheckpointError: a missing, unreadable, unsafe or mismatched file (one line).
    """
    weights_path = self.existing(weights_path)
    if _is_npz(weights_path):
      return self.read_npz(weights_path)[0]
    npz_path = pathlib.Path(converted_path or weights_path.with_suffix(".npz")).expanduser()
    if npz_path.is_file():
      try:
        state, source = self.read_npz(npz_path)
        if source == source_sha256(weights_path):
          return state
      except CheckpointError:
        pass  # A damaged conversion: make it again.
    return self.convert(weights_path, npz_path)
