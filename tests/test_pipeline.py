"""The grain input pipeline: seeded shuffles, global batches split per process, scaling."""

import numpy as np
import pytest

from cnnjax.data.pipeline import fit_image, make_train_dataset, scale_to_unit_range
from cnnjax.errors import ConfigError

NUM_RECORDS = 24


def _source(num_records: int = NUM_RECORDS, size: int = 8):
  # Record i is an image filled with the value i, so batches reveal their indices.
  return [{"image": np.full((size, size, 1), index, np.uint8), "label": index % 10}
          for index in range(num_records)]


def _indices(batch) -> list[int]:
  values = np.round((batch["image"][:, 0, 0, 0] + 1.0) * 127.5).astype(int)
  return values.tolist()


def _take(dataset, count: int):
  iterator = iter(dataset)
  return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize("cache_in_memory", [False, True])
def test_batches_are_a_seeded_shuffle_reshuffled_every_epoch(cache_in_memory):
  kwargs = dict(global_batch_size=8, image_size=8, resize="pad", has_label=True,
                num_threads=2, prefetch=2, cache_in_memory=cache_in_memory)
  batches = _take(make_train_dataset(_source(), seed=3, **kwargs), 6)
  first_epoch = sum((_indices(b) for b in batches[:3]), [])
  second_epoch = sum((_indices(b) for b in batches[3:]), [])
  assert sorted(first_epoch) == sorted(second_epoch) == list(range(NUM_RECORDS))
  assert first_epoch != second_epoch
  again = _take(make_train_dataset(_source(), seed=3, **kwargs), 6)
  assert [_indices(b) for b in again] == [_indices(b) for b in batches]
  other_seed = _take(make_train_dataset(_source(), seed=4, **kwargs), 3)
  assert [_indices(b) for b in other_seed] != [_indices(b) for b in batches[:3]]
  for batch in batches:
    assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
    np.testing.assert_array_equal(batch["label"], np.array(_indices(batch)) % 10)


def test_process_slices_reassemble_the_global_batch():
  kwargs = dict(seed=0, global_batch_size=8, image_size=8, resize="pad", has_label=False)
  whole = _take(make_train_dataset(_source(), **kwargs), 3)
  slices = [_take(make_train_dataset(_source(), process_index=p, process_count=2,
                                     **kwargs), 3) for p in range(2)]
  for step in range(3):
    assert _indices(slices[0][step]) + _indices(slices[1][step]) == _indices(whole[step])
    assert slices[0][step]["image"].shape == (4, 8, 8, 1)


def test_iterator_state_restores_the_position():
  dataset = make_train_dataset(_source(), seed=1, global_batch_size=8, image_size=8,
                               resize="pad", has_label=False)
  iterator = iter(dataset)
  next(iterator), next(iterator)
  state = iterator.get_state()
  expected = [_indices(next(iterator)) for _ in range(3)]
  restored = iter(dataset)
  restored.set_state(state)
  assert [_indices(next(restored)) for _ in range(3)] == expected


def test_pad_centres_and_resize_scales():
  image = np.full((28, 28, 1), 255, np.uint8)
  padded = fit_image(image, 32, "pad")
  assert padded.shape == (32, 32, 1)
  assert padded[2:30, 2:30].min() == 255 and padded[:2].max() == 0
  resized = fit_image(np.full((28, 28, 3), 7, np.uint8), 64, "resize")
  assert resized.shape == (64, 64, 3) and np.all(resized == 7)
  with pytest.raises(ConfigError, match="data.resize"):
    fit_image(image, 16, "pad")


def test_scaling_maps_uint8_to_unit_range():
  scaled = scale_to_unit_range(np.array([0, 255], np.uint8))
  np.testing.assert_allclose(scaled, [-1.0, 1.0])


def test_batch_not_divisible_by_processes_is_refused():
  with pytest.raises(ConfigError, match="not divisible"):
    make_train_dataset(_source(), seed=0, global_batch_size=9, image_size=8,
                       resize="pad", has_label=False, process_count=2)
