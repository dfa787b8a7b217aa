"""The `pix2pix` kind: paired image-to-image translation (`configs/pix2pix.py`).

Training reads two image features of one dataset (`data.source_feature` ->
`data.target_feature`); grids show input | output | target on fixed test pairs; the
test-split scores (L1, PSNR, SSIM and, with `eval.extractor_workdir`, FID, KID and the
task score) are logged every `eval.every` steps and written to `DIR/eval.json` when
training ends (`run.py evaluate` recomputes them for any checkpoint).
"""

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from cnnjax.data.paired import PairedSource, make_paired_dataset, open_pairs
from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.evaluation.translation import score_translations, settings_of
from cnnjax.io.workdir import EVAL_FILE, write_json_atomic
from cnnjax.runs.classifier import load_extractor
from cnnjax.runs.kind import ExperimentKind
from cnnjax.runs.restore import RunSpec, open_spec, spec_as
from cnnjax.train.checkpointing import Checkpointer
from cnnjax.train.loop import TrainData
from cnnjax.train.pix2pix_program import (PIX2PIX_HINT, Pix2pixProgram,
                                          build_pix2pix_program, validate_pix2pix_config)


def _open_data(config: ml_collections.ConfigDict) -> TrainData:
  pairs, info = open_pairs(config.data, config.data.split)
  return TrainData(source=pairs, info=info)


def _batches(config: ml_collections.ConfigDict, data: TrainData, *, process_index: int,
             process_count: int):
  return iter(make_paired_dataset(
      data.source, seed=config.seed, global_batch_size=config.train.batch_size,
      process_index=process_index, process_count=process_count,
      num_threads=config.data.num_threads, prefetch=config.data.prefetch))


def _build_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict,
                   grid_pairs=None) -> Pix2pixProgram:
  return build_pix2pix_program(config, mesh=mesh,
                               source_channels=data_info["source_channels"],
                               target_channels=data_info["image_shape"][-1],
                               grid_pairs=grid_pairs)


def test_pairs(config: ml_collections.ConfigDict, limit: int = 0) -> PairedSource:
  """The test split's pairs (the first `limit`; 0: all)."""
  pairs, _ = open_pairs(config.data, config.data.test_split)
  if limit and limit < len(pairs):
    pairs.sources, pairs.targets = pairs.sources[:limit], pairs.targets[:limit]
    if pairs.labels is not None:
      pairs.labels = pairs.labels[:limit]
  return pairs


def _build_training_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict
                            ) -> Pix2pixProgram:
  pairs = test_pairs(config, config.eval.num_grid)
  return _build_program(config, mesh=mesh, data_info=data_info, grid_pairs=(
      scale_to_unit_range(pairs.sources), scale_to_unit_range(pairs.targets)))


def _scorer(config: ml_collections.ConfigDict, extractor_workdir: str | None = None):
  """`(program, state) -> metrics` on the test split, its data and extractor loaded once."""
  pairs = test_pairs(config, config.eval.num_examples)
  extractor_workdir = extractor_workdir or config.eval.extractor_workdir
  extractor = load_extractor(extractor_workdir) if extractor_workdir else None
  sources = scale_to_unit_range(pairs.sources)
  targets = scale_to_unit_range(pairs.targets)

  def score(program, state) -> dict[str, float]:
    outputs = program.translate_state(state, sources, config.seed)
    return score_translations(outputs, targets_nhwc=targets, labels_n=pairs.labels,
                              extractor=extractor)

  settings = settings_of(extractor, dataset=config.data.name, split=config.data.test_split,
                         num_examples=len(pairs), dropout_at_test=bool(
                             config.model.dropout_at_test), seed=config.seed)
  return score, settings


def _make_evaluator(config: ml_collections.ConfigDict):
  """The periodic scorer (None when `eval.every` is 0); a named extractor is checked
  before training even when it scores only at the end (or only `run.py evaluate`)."""
  if not config.eval.every and not config.eval.extractor_workdir:
    return None
  score, _ = _scorer(config)
  return score if config.eval.every else None


def evaluate_translation_run(spec: RunSpec, *, num_samples: int | None = None,
                             seed: int = 0, step: int | None = None,
                             extractor_workdir: str | None = None,
                             reference_split: str | None = None) -> dict[str, Any]:
  """What `run.py evaluate` writes for a pix2pix run: its test-split scores.

  `num_samples` limits the test pairs scored; `reference_split` is not used (the
  reference is the test split's targets); `seed` is unused (dropout keys follow the
  run's seed).
  """
  del seed, reference_split
  config = spec.config
  if num_samples is not None:
    config = config.copy_and_resolve_references()
    config.unlock()
    config.eval.num_examples = num_samples
  score, settings = _scorer(config, extractor_workdir)
  run = open_spec(spec, step)
  metrics = score(run.program, run.state)
  logging.info("Step %d of %s: %s", run.step, spec.workdir,
               ", ".join(f"{name} {value:.4g}" for name, value in metrics.items()))
  return {"step": run.step, "metrics": metrics, "settings": settings}


def _score_at_end(config: ml_collections.ConfigDict, workdir: str,
                  logged: dict[str, float]) -> dict[str, float]:
  """With `eval.at_end`, the test-split scores of the last step into eval.json."""
  if not config.eval.at_end:
    return logged
  workdir = os.path.abspath(workdir)
  checkpointer = Checkpointer(workdir, config.checkpoint, read_only=True)
  try:
    finished = config.train.num_steps in checkpointer.all_steps()
  finally:
    checkpointer.close()
  if not finished:
    return logged
  result = evaluate_translation_run(spec_as(workdir, KIND), step=config.train.num_steps)
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, EVAL_FILE), result)
  return {**logged, **{f"test_{name}": value for name, value in result["metrics"].items()}}


def translate_images(run, sources_nhwc: np.ndarray, seed: int) -> np.ndarray:
  """The generator's translations of images in [-1, 1] (what `run.py translate` draws)."""
  return run.program.translate_state(run.state, sources_nhwc, seed)


KIND = ExperimentKind(
    name="pix2pix",
    summary="paired image-to-image translation (pix2pix; configs/pix2pix.py)",
    config_hint=PIX2PIX_HINT,
    validate=validate_pix2pix_config,
    build_program=_build_program,
    build_training_program=_build_training_program,
    open_data=_open_data,
    make_batches=_batches,
    make_evaluator=_make_evaluator,
    after_training=_score_at_end,
    evaluate=evaluate_translation_run,
)
