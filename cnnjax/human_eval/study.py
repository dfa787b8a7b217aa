"""Building and opening a study: the images raters judge, stored in the run's directory.

A study lives in `DIR/human_eval/`: `study.sqlite` (settings, images, judgments) and
`images/` (one PNG per image, named by an opaque random id, so neither the page, the URLs
nor the file names say which images are real). Generated images are samples of the run
(and of `compare_workdir`, whose samples are the other half of the fakes: each run's
fakes get their own score); real images come from the run's dataset split. Once
created, a study is fixed: restarting the server continues it.
"""

import dataclasses
import hashlib
import os
import secrets

import jax
import numpy as np
from absl import logging

from cnnjax.data.splits import load_split
from cnnjax.errors import ConfigError
from cnnjax.human_eval.storage import StudyStore
from cnnjax.io.images import save_png, to_uint8
from cnnjax.runs.opening import open_run, read_run

STUDY_DIR = "human_eval"
DATABASE = "study.sqlite"
IMAGE_DIR = "images"


@dataclasses.dataclass(frozen=True)
class StudySettings:
  """What a study shows (fixed when it is created)."""
  num_real: int = 50
  num_fake: int = 50
  num_qualification: int = 0    # extra images shown first, half real: not scored
  qualification_threshold: float = 0.5
  split: str = "test"
  seed: int = 0
  compare_workdir: str = ""


@dataclasses.dataclass(frozen=True)
class Study:
  """An open study: its store and where its images are."""
  directory: str
  store: StudyStore
  settings: dict

  def image_path(self, image_id: str) -> str | None:
    """The PNG of a known image id, else None (ids come from the browser)."""
    image = self.store.image(image_id)
    if image is None:
      return None
    return os.path.join(self.directory, IMAGE_DIR, image["file_name"])

  def order_for(self, rater_id: str) -> list[str]:
    """The rater's image ids: qualification block first, each block shuffled by a key
    derived from the study seed and the rater id (the same rater gets the same order)."""
    digest = hashlib.sha256(f"{self.settings['seed']}:{rater_id}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    images = self.store.images()
    order = []
    for block in ("qualification", "main"):
      ids = [image["image_id"] for image in images if image["block"] == block]
      order += [ids[i] for i in rng.permutation(len(ids))]
    return order


def study_directory(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), STUDY_DIR)


def _fakes(workdir: str, num: int, seed: int) -> np.ndarray:
  """(num, H, W, C) uint8 samples of a run."""
  run = open_run(workdir)
  sample = run.kind.require("sample", run.workdir)
  return to_uint8(np.asarray(jax.device_get(sample(run, num=num, seed=seed, labels=None))))


def _reals(workdir: str, num: int, split: str) -> np.ndarray:
  """(num, H, W, C) uint8 images of the run's dataset split, fitted as in training."""
  config = read_run(workdir).config
  images, _ = load_split(config.data.name, split, config.data.data_dir,
                         config.data.image_size, config.data.resize)
  if len(images) < num:
    raise ConfigError(f"The {split} split of {config.data.name} has {len(images)} "
                      f"images, fewer than the {num} real images asked for; ask for fewer "
                      "(--num_real) or name a larger --split.")
  return images[:num]


def create_study(workdir: str, settings: StudySettings) -> Study:
  """Samples, picks and stores the study's images (a no-op for an existing study).

  Raises:
    ConfigError, WorkdirError, CheckpointError, DatasetError: an unusable run, split or
      comparison run.
  """
  directory = study_directory(workdir)
  store = StudyStore(os.path.join(directory, DATABASE))
  if store.exists():
    return open_study(workdir)
  read_run(workdir)   # One-line errors before anything is sampled or written.
  if settings.compare_workdir:
    read_run(settings.compare_workdir)
  num_qual_real = settings.num_qualification // 2
  num_qual_fake = settings.num_qualification - num_qual_real
  reals = _reals(workdir, settings.num_real + num_qual_real, settings.split)
  sources = [workdir] + ([settings.compare_workdir] if settings.compare_workdir else [])
  per_source = [(settings.num_fake + num_qual_fake) // len(sources)] * len(sources)
  per_source[0] += settings.num_fake + num_qual_fake - sum(per_source)
  fakes = [(_fakes(source, count, settings.seed), source)
           for source, count in zip(sources, per_source)]

  os.makedirs(os.path.join(directory, IMAGE_DIR), exist_ok=True)
  records = []

  def add(image_hwc, truth, block, source):
    image_id = secrets.token_hex(8)   # Opaque: ids and file names carry no truth.
    save_png(os.path.join(directory, IMAGE_DIR, image_id + ".png"), image_hwc)
    records.append(dict(image_id=image_id, truth=truth, block=block, source=source,
                        file_name=image_id + ".png"))

  split_source = f"dataset:{settings.split}"
  for index, image in enumerate(reals):
    add(image, "real", "qualification" if index < num_qual_real else "main", split_source)
  for images, source in fakes:
    for index, image in enumerate(images):
      qualification = source == workdir and index < num_qual_fake
      add(image, "fake", "qualification" if qualification else "main",
          os.path.abspath(source))
  store.create(dataclasses.asdict(settings) | {"workdir": os.path.abspath(workdir)},
               records)
  logging.info("Created a study of %d images in %s.", len(records), directory)
  return open_study(workdir)


def open_study(workdir: str) -> Study:
  """The existing study of `workdir`.

  Raises:
    ConfigError: the run has no study yet.
  """
  directory = study_directory(workdir)
  store = StudyStore(os.path.join(directory, DATABASE))
  if not store.exists():
    raise ConfigError(f"{workdir} has no human-evaluation study yet; start one with "
                      f"python run.py human_eval --workdir={workdir}.")
  return Study(directory=directory, store=store, settings=store.settings())
