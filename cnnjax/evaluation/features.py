"""Features and logits of a trained in-domain classifier, batched over every device.

An `Extractor` wraps a classifier's jitted `predict` (see `cnnjax.train.classifier_program`;
`cnnjax.runs.extractors.load_extractor` restores one from a classifier run):
images are split into fixed-size batches sharded over the data mesh, the last batch is
padded to full size (so one program serves every call) and the padding dropped, and
images of another size are resized to the classifier's resolution on device.
"""

import hashlib
from typing import Any

import jax
import ml_collections
import numpy as np
import scipy.special

from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.data.splits import load_split
from cnnjax.errors import ConfigError
from cnnjax.train import parallel
from cnnjax.models.classifier import Classifier
from cnnjax.train.classifier_program import ClassifierProgram
from cnnjax.train.state import PlayerState


def weights_digest(tree: Any) -> str:
  """A short SHA-256 of every array of `tree`: a classifier retrained in the same
  directory gets another extractor id, so stale cached references are not reused."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(tree)):
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()[:12]


class Extractor:
  """A classifier's penultimate features and logits of images in [-1, 1].

  Attributes:
    extractor_id: identifies the network and its weights, for cache keys and reports
      (`classifier:<absolute workdir>@<step>:<weights digest>`).
    image_shape: (H, W, C) the classifier sees.
    batch_size: images per device call, a multiple of the number of devices.
    step: the training step of the weights (None when not restored from a checkpoint).
    num_calls: device calls made so far (each of `batch_size` images).
  """

  def __init__(self, program: ClassifierProgram, model_state: PlayerState, *,
               extractor_id: str, batch_size: int, step: int | None = None):
    """Args:
      program: the classifier's program (its `predict` and mesh).
      model_state: the classifier's replicated parameters and BatchNorm statistics.
      extractor_id: see the class attributes.
      batch_size: images per call; rounded up to a multiple of the number of devices.
      step: see the class attributes.
    """
    self._program = program
    self._model_state = model_state
    self.extractor_id = extractor_id
    self.step = step
    self.image_shape = (program.image_size, program.image_size, program.channels)
    num_devices = program.mesh.size
    self.batch_size = -(-max(batch_size, 1) // num_devices) * num_devices
    self.num_calls = 0

  @property
  def model(self) -> Classifier:
    """The classifier module (its architecture: widths, feature_dim, ...)."""
    return self._program.model

  @property
  def num_classes(self) -> int:
    return self._program.model.num_classes

  @property
  def num_features(self) -> int:
    return self._program.model.feature_dim

  def features_and_logits(self, images_nhwc: Any) -> tuple[np.ndarray, np.ndarray]:
    """Features and logits of any number of images.

    Args:
      images_nhwc: (N, h, w, C) float in [-1, 1] or uint8 in [0, 255]; any h, w (resized
        bilinearly to the classifier's resolution), C as the classifier's.

    Returns:
      (features (N, D), logits (N, K)) as float32 numpy arrays.
    """
    if np.ndim(images_nhwc) != 4 or np.shape(images_nhwc)[-1] != self.image_shape[-1]:
      raise ConfigError(f"The classifier takes (N, H, W, {self.image_shape[-1]}) images, "
                        f"got shape {np.shape(images_nhwc)}; evaluate with a classifier "
                        "trained on the same kind of images.")
    sharding = parallel.data_sharded(self._program.mesh)
    features, logits = [], []
    for start in range(0, len(images_nhwc), self.batch_size):
      chunk = np.asarray(images_nhwc[start:start + self.batch_size])
      if chunk.dtype == np.uint8:
        chunk = scale_to_unit_range(chunk)
      num_valid = len(chunk)
      padding = ((0, self.batch_size - num_valid),) + ((0, 0),) * 3
      chunk = np.pad(chunk.astype(np.float32), padding)
      logits_bk, features_bd = parallel.to_host(
          self._program.predict(self._model_state, jax.device_put(chunk, sharding)))
      self.num_calls += 1
      features.append(features_bd[:num_valid])
      logits.append(logits_bk[:num_valid])
    if not features:
      return (np.zeros((0, self.num_features), np.float32),
              np.zeros((0, self.num_classes), np.float32))
    return np.concatenate(features), np.concatenate(logits)


def classification_accuracy(logits_nk: np.ndarray, labels_n: np.ndarray
                            ) -> dict[str, float]:
  """Overall accuracy and the accuracy on each class present in `labels_n`.

  Args:
    logits_nk: class logits (N, K).
    labels_n: true (or conditioning) classes (N,).

  Returns:
    {"accuracy": ..., "accuracy_<k>": ... for each class k in labels_n}.
  """
  correct_n = np.argmax(logits_nk, axis=-1) == labels_n
  metrics = {"accuracy": float(np.mean(correct_n))}
  for label in np.unique(labels_n):
    metrics[f"accuracy_{int(label)}"] = float(np.mean(correct_n[labels_n == label]))
  return metrics


def split_accuracy(extractor: Extractor, data_config: ml_collections.ConfigDict,
                   split: str) -> dict[str, float]:
  """The classifier's accuracy and cross-entropy on a labelled dataset split.

  Args:
    extractor: the classifier.
    data_config: a config's `data` section (name, data_dir, image_size, resize).
    split: the split to score, e.g. "test".

  Returns:
    `classification_accuracy`'s metrics, `loss` and `num_examples`.
  """
  images, labels = load_split(data_config.name, split, data_config.data_dir,
                              data_config.image_size, data_config.resize)
  _, logits_nk = extractor.features_and_logits(images)
  log_probs_nk = scipy.special.log_softmax(logits_nk.astype(np.float64), axis=-1)
  loss = -np.mean(np.take_along_axis(log_probs_nk, labels[:, None], axis=-1))
  return {**classification_accuracy(logits_nk, labels), "loss": float(loss),
          "num_examples": len(labels)}
