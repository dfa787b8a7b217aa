"""Tests of the FID InceptionV3: resize, weight-file reading/conversion, network.

The weight files are synthetic (random values, exactly the published names and
shapes) in torch's zip and legacy formats: written by `torch.save` where torch is
installed, and otherwise (and for the malformed files) by hand, so torch is not
needed. Only the resize cross-check against `F.interpolate` is skipped without torch.
"""

import os
import pathlib
import pickle
import struct
import zipfile

import numpy as np
import pytest

from cnnjax.errors import CheckpointError, ConfigError
from cnnjax.models import inception, inception_weights

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


# ----------------------------------------------------- torch's file formats, by hand


def _str(text: str) -> bytes:
  data = text.encode()
  return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
  return pickle.BININT + struct.pack("<i", value)


def _tuple(items) -> bytes:
  return pickle.MARK + b"".join(items) + pickle.TUPLE


def _global(module: str, name: str) -> bytes:
  return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _state_pickle(storages: dict[str, tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]],
                  legacy: bool) -> bytes:
  """Protocol-2 pickle of an OrderedDict of tensors, as `torch.save` writes it."""
  items = []
  for index, (name, (flat, shape, stride)) in enumerate(storages.items()):
    pid = [_str("storage"), _global("torch", _STORAGE_NAMES[flat.dtype]), _str(str(index)),
           _str("cpu"), _int(flat.size)] + ([pickle.NONE] if legacy else [])
    args = [_tuple(pid) + pickle.BINPERSID, _int(0), _tuple(map(_int, shape)),
            _tuple(map(_int, stride)), pickle.NEWFALSE,
            _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE]
    items.append(_str(name) + _global("torch._utils", "_rebuild_tensor_v2")
                 + _tuple(args) + pickle.REDUCE)
  return (pickle.PROTO + b"\x02" + _global("collections", "OrderedDict")
          + pickle.EMPTY_TUPLE + pickle.REDUCE + pickle.MARK + b"".join(items)
          + pickle.SETITEMS + pickle.STOP)


def write_pth(path: pathlib.Path, state: dict[str, np.ndarray], *, legacy: bool = False,
              column_major: tuple[str, ...] = ()) -> pathlib.Path:
  """Writes `state` as `torch.save` would (zip, or the pre-1.6 legacy stream).

  Tensors named in `column_major` are stored transposed with column-major strides.
  """
  storages = {}
  for name, value in state.items():
    value = np.asarray(value)
    order = "F" if name in column_major else "C"
    elem_strides = tuple(s // value.itemsize for s in
                         np.zeros(value.shape, value.dtype, order=order).strides)
    storages[name] = (value.ravel(order=order), value.shape, elem_strides)
  body = _state_pickle(storages, legacy)
  if legacy:
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    parts = [pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2), pickle.dumps(1001, protocol=2),
             pickle.dumps(sys_info, protocol=2), body,
             pickle.dumps([str(i) for i in range(len(storages))], protocol=2)]
    for flat, _, _ in storages.values():
      parts += [struct.pack("<q", flat.size), flat.astype(flat.dtype.newbyteorder("<")).tobytes()]
    path.write_bytes(b"".join(parts))
  else:
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", body)
      archive.writestr("archive/byteorder", "little")
      archive.writestr("archive/version", "3\n")
      for index, (flat, _, _) in enumerate(storages.values()):
        archive.writestr(f"archive/data/{index}", flat.tobytes())
  return path


def synthetic_state(seed: int = 0) -> dict[str, np.ndarray]:
  """pytorch-fid's state dict: exact names and shapes, random moderate values."""
  rng = np.random.default_rng(seed)
  state = {}
  for key, shape in inception.torch_state_dict_shapes().items():
    if key.endswith("conv.weight") or key == "fc.weight":
      value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
    elif key.endswith("running_var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif key.endswith("bn.weight"):
      value = rng.uniform(0.8, 1.2, shape)
    else:
      value = rng.uniform(-0.1, 0.1, shape)
    state[key] = value.astype(np.float32)
  state["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.array(7, np.int64)
  return state


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
  return synthetic_state()


_COLUMN_MAJOR = ("fc.weight", "Mixed_6b.branch7x7_2.conv.weight")


@pytest.fixture(scope="module", params=["zip", "legacy"])
def pth_path(request, state, tmp_path_factory) -> pathlib.Path:
  """The synthetic state dict saved by `torch.save` if torch is installed, else by hand.

  Two tensors are saved as transposed views (column-major strides).
  """
  path = tmp_path_factory.mktemp(request.param) / inception_weights.PT_INCEPTION_FILENAME
  legacy = request.param == "legacy"
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return write_pth(path, state, legacy=legacy, column_major=_COLUMN_MAJOR)
  transposed_view = lambda value: torch.from_numpy(value.T.copy()).permute(
      *reversed(range(value.ndim)))
  tensors = {key: transposed_view(value) if key in _COLUMN_MAJOR else torch.from_numpy(value)
             for key, value in state.items()}
  assert not tensors["fc.weight"].is_contiguous()
  torch.save(tensors, path, _use_new_zipfile_serialization=not legacy)
  return path


def _error(call, *args, **kwargs) -> str:
  """Runs `call`, which must raise a one-line CheckpointError; returns its message."""
  with pytest.raises(CheckpointError) as info:
    call(*args, **kwargs)
  assert "\n" not in str(info.value)
  return str(info.value)


# ----------------------------------------------------------------- resize


def numpy_bilinear(images_bhwc: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """PyTorch's bilinear interpolation (align_corners=False), written independently.

  Source positions are rounded to float32 as PyTorch computes them (a fused
  multiply-add of the float32 scale); the mixing is done in float64.
  """
  def axis_weights(n_in: int, n_out: int) -> np.ndarray:
    f32 = np.float32
    scale = np.float64(f32(n_in) / f32(n_out))
    src = (scale * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5).astype(f32)
    src = np.maximum(src, f32(0))
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = (src - lo.astype(f32)).astype(np.float64)
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), lo), 1 - frac)
    np.add.at(weights, (np.arange(n_out), hi), frac)
    return weights
  wy = axis_weights(images_bhwc.shape[1], size[0])
  wx = axis_weights(images_bhwc.shape[2], size[1])
  rows = np.einsum("yh,bhwc->bywc", wy, images_bhwc.astype(np.float64))
  return np.einsum("xw,bywc->byxc", wx, rows)


RESIZES = [((5, 7), (11, 9)), ((13, 11), (7, 5)), ((6, 20), (15, 8)), ((75, 75), (299, 299)),
           ((331, 310), (299, 299))]


@pytest.mark.parametrize("in_size,out_size", RESIZES)
def test_resize_matches_numpy_bilinear(in_size, out_size):
  images = np.random.default_rng(1).uniform(-1, 1, (2, *in_size, 3)).astype(np.float32)
  resized = np.asarray(inception.resize_bilinear(images, out_size))
  assert resized.shape == (2, *out_size, 3)
  np.testing.assert_allclose(resized, numpy_bilinear(images, out_size), rtol=0, atol=1e-6)


def test_resize_matches_torch_interpolate():
  torch = pytest.importorskip("torch")
  for in_size, out_size in RESIZES:
    images = np.random.default_rng(2).uniform(0, 1, (2, *in_size, 3)).astype(np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(images).permute(0, 3, 1, 2), size=out_size, mode="bilinear",
        align_corners=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(inception.resize_bilinear(images, out_size)),
                               expected, rtol=0, atol=1e-6)


def test_preprocess_keeps_range_and_repeats_grey():
  images = np.random.default_rng(3).uniform(-1, 1, (2, 299, 299, 1)).astype(np.float32)
  x = np.asarray(inception.fid_preprocess(images))
  assert x.shape == (2, 299, 299, 3)  # [-1,1] -> [0,1] -> resize -> [-1,1]: unchanged.
  np.testing.assert_allclose(x, np.repeat(images, 3, axis=-1), atol=1e-6)
  small = np.asarray(inception.fid_preprocess(images[:, :75, :75]))
  np.testing.assert_allclose(small, numpy_bilinear(np.repeat(images[:, :75, :75], 3, -1),
                                                   (299, 299)), atol=1e-5)
  with pytest.raises(ConfigError):
    inception.fid_preprocess(np.zeros((2, 32, 32, 4)))


# ----------------------------------------------------------------- weights


def test_pth_and_npz_round_trip_every_tensor_exactly(pth_path, state, tmp_path):
  read = inception_weights.read_pth(pth_path)
  assert read.keys() == state.keys()
  for key, value in state.items():
    assert read[key].dtype == value.dtype and read[key].shape == value.shape, key
    np.testing.assert_array_equal(read[key], value, err_msg=key)
  npz_path = inception_weights.convert_pth_to_npz(pth_path, tmp_path / "w.npz")
  with np.load(npz_path, allow_pickle=False) as npz:
    converted = {key: npz[key] for key in npz.files if not key.startswith("__")}
  assert converted.keys() == inception.torch_state_dict_shapes().keys()
  for key, value in converted.items():
    assert value.dtype == np.float32
    np.testing.assert_array_equal(value, state[key], err_msg=key)


def test_variables_layout(pth_path, state, tmp_path):
  variables = inception_weights.load_inception_variables(pth_path, tmp_path / "w.npz")
  params, stats = variables["params"], variables["batch_stats"]
  np.testing.assert_array_equal(params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"],
                                state["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
  assert params["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"].shape == (1, 7, 128, 128)
  np.testing.assert_array_equal(params["fc"]["kernel"], state["fc.weight"].T)
  np.testing.assert_array_equal(params["fc"]["bias"], state["fc.bias"])
  bn = params["Mixed_7c"]["branch_pool"]["bn"]
  np.testing.assert_array_equal(bn["scale"], state["Mixed_7c.branch_pool.bn.weight"])
  np.testing.assert_array_equal(bn["bias"], state["Mixed_7c.branch_pool.bn.bias"])
  stat = stats["Mixed_7c"]["branch_pool"]["bn"]
  np.testing.assert_array_equal(stat["mean"], state["Mixed_7c.branch_pool.bn.running_mean"])
  np.testing.assert_array_equal(stat["var"], state["Mixed_7c.branch_pool.bn.running_var"])


def test_extractor_gives_finite_pool3_features(state, tmp_path):
  path = write_pth(tmp_path / "w.pth", state)
  extract = inception_weights.build_inception_extractor(path, return_logits=True)
  images = np.random.default_rng(4).uniform(-1, 1, (2, 75, 75, 3)).astype(np.float32)
  features, logits = extract(images)
  assert features.shape == (2, inception.NUM_FEATURES)
  assert logits.shape == (2, inception.NUM_CLASSES)
  assert np.isfinite(features).all() and np.isfinite(logits).all()
  assert (np.asarray(features) >= 0).all() and np.std(features) > 0  # Means of ReLUs.
  assert (tmp_path / "w.npz").is_file()


def test_conversion_is_reused_until_the_pth_changes(state, tmp_path, monkeypatch):
  path = write_pth(tmp_path / "w.pth", state)
  inception_weights.load_inception_variables(path)
  real_read_pth = inception_weights.read_pth
  monkeypatch.setattr(inception_weights, "read_pth",
                      lambda *a: pytest.fail("read the .pth despite its .npz"))
  inception_weights.load_inception_variables(path)
  changed = dict(state, **{"fc.bias": state["fc.bias"] + 1})
  write_pth(path, changed)
  monkeypatch.setattr(inception_weights, "read_pth", real_read_pth)
  variables = inception_weights.load_inception_variables(path)
  np.testing.assert_array_equal(variables["params"]["fc"]["bias"], changed["fc.bias"])
  np.testing.assert_array_equal(  # The .npz is usable on its own.
      inception_weights.load_inception_variables(tmp_path / "w.npz")["params"]["fc"]["bias"],
      changed["fc.bias"])
  message = _error(inception_weights.load_inception_variables, path, path / "w.npz")
  assert "Cannot write converted Inception weights" in message
  assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz", "w.pth"]


def test_missing_file(tmp_path):
  message = _error(inception_weights.load_inception_variables, tmp_path / "nope.pth")
  assert "does not exist" in message and inception_weights.PT_INCEPTION_URL in message


@pytest.mark.parametrize("content", [b"", b"not a weight file at all\n\x00\x01",
                                     pickle.dumps({"a": 1}, protocol=2)])
def test_garbage_file(tmp_path, content):
  path = tmp_path / "bad.pth"
  path.write_bytes(content)
  assert "not a readable PyTorch state dict" in _error(
      inception_weights.load_inception_variables, path)


def test_truncated_and_garbled_archives(state, tmp_path):
  small = {key: state[key] for key in list(state)[:3]}
  legacy = write_pth(tmp_path / "legacy.pth", small, legacy=True)
  legacy.write_bytes(legacy.read_bytes()[:-10])
  assert "truncated" in _error(inception_weights.read_pth, legacy)
  archive = write_pth(tmp_path / "zip.pth", small)
  with zipfile.ZipFile(archive) as z:
    entries = {name: z.read(name) for name in z.namelist()}
  entries["archive/data/1"] = entries["archive/data/1"][:8]  # A short storage.
  with zipfile.ZipFile(archive, "w") as z:
    for name, data in entries.items():
      z.writestr(name, data)
  assert "has 8 bytes, expected" in _error(inception_weights.read_pth, archive)
  npz = tmp_path / "bad.npz"
  npz.write_bytes(b"PK\x03\x04 garbage")
  assert "not a readable .npz" in _error(inception_weights.read_npz, npz)


def test_missing_key_wrong_shape_and_unexpected_key(state, tmp_path):
  shapes = inception.torch_state_dict_shapes()
  keys = list(shapes)
  path = write_pth(tmp_path / "missing.pth", {key: state[key] for key in keys[:3]})
  message = _error(inception_weights.load_inception_variables, path)
  assert f"lacks tensor '{keys[3]}' of shape {shapes[keys[3]]}" in message
  assert f"and {len(keys) - 4} more" in message

  wrong = dict(state, **{"fc.weight": np.zeros((1000, 2048), np.float32)})
  message = _error(inception_weights.convert_pth_to_npz,
                   write_pth(tmp_path / "shape.pth", wrong))
  assert "'fc.weight' has shape (1000, 2048), expected (1008, 2048)" in message

  extra = dict(state, **{"AuxLogits.fc.bias": np.zeros(1008, np.float32)})
  message = _error(inception_weights.load_inception_variables,
                   write_pth(tmp_path / "extra.pth", extra))
  assert "unexpected tensor 'AuxLogits.fc.bias'" in message
  assert not (tmp_path / "extra.npz").exists()


class _RunsCode:
  def __init__(self, function, argument):
    self.function, self.argument = function, argument

  def __reduce__(self):
    return self.function, (self.argument,)


@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("function", ["os.system", "builtins.exec"])
def test_malicious_pickle_is_refused_without_running(tmp_path, container, function):
  marker = tmp_path / "pwned"
  payload = (_RunsCode(os.system, f"touch {marker}") if function == "os.system"
             else _RunsCode(exec, f"open({str(marker)!r}, 'w').close()"))
  body = pickle.dumps({"Conv2d_1a_3x3.conv.weight": payload}, protocol=2)
  path = tmp_path / "evil.pth"
  if container == "zip":
    with zipfile.ZipFile(path, "w") as archive:
      archive.writestr("archive/data.pkl", body)
  else:
    path.write_bytes(body)  # As the legacy format's first pickle.
  message = _error(inception_weights.load_inception_variables, path)
  assert "refusing to unpickle" in message
  assert ("system" if function == "os.system" else "exec") in message
  assert not marker.exists()
