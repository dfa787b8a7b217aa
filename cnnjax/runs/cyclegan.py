"""The `cyclegan` kind: unpaired image-to-image translation (`configs/cyclegan.py`).

Training reads two domains, each an image feature of a dataset split
(`data.domain_a`, `data.domain_b`), in independent orders; grids show A | G(A) | F(G(A))
and B | F(B) | G(F(B)) on fixed test images. The test-split scores are logged every
`eval.every` steps and written to `DIR/eval.json` when training ends (`run.py evaluate`
recomputes them for any checkpoint): the cycle reconstruction errors of both domains
and, with `eval.extractor_workdir` (a classifier trained on domain B), FID and KID of
G(A) against real B, the task score (the classifier recognises the class of each
source A in G(A)) and its accuracy on real B (the ceiling); with
`eval.extractor_workdir_a` (a classifier trained on domain A), the same scores of F(B)
against real A, suffixed `_b_to_a`.
"""

import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from cnnjax.data.pipeline import scale_to_unit_range
from cnnjax.data.unpaired import DomainImages, make_unpaired_dataset, open_domain
from cnnjax.errors import ConfigError
from cnnjax.evaluation.translation import score_translations, settings_of
from cnnjax.io.workdir import EVAL_FILE, write_json_atomic
from cnnjax.runs.classifier import load_extractor
from cnnjax.runs.kind import ExperimentKind
from cnnjax.runs.restore import RunSpec, open_spec, spec_as
from cnnjax.train.checkpointing import Checkpointer
from cnnjax.train.cyclegan_program import (CYCLEGAN_HINT, CycleGanProgram,
                                           build_cyclegan_program, validate_cyclegan_config)
from cnnjax.train.loop import TrainData


def _open_data(config: ml_collections.ConfigDict) -> TrainData:
  a, info_a = open_domain(config.data, "domain_a", config.data.domain_a.split)
  b, info_b = open_domain(config.data, "domain_b", config.data.domain_b.split)
  size = config.data.image_size
  return TrainData(source=(a, b), info={
      "name": f"{info_a['name']}:{info_a['feature']} -> {info_b['name']}:{info_b['feature']}",
      "split": f"{info_a['split']} / {info_b['split']}",
      "domain_a": info_a, "domain_b": info_b,
      "a_channels": info_a["channels"], "b_channels": info_b["channels"],
      "image_shape": [size, size, info_b["channels"]],
      "num_classes": info_b["num_classes"]})


def _batches(config: ml_collections.ConfigDict, data: TrainData, *, process_index: int,
             process_count: int):
  a, b = data.source
  return iter(make_unpaired_dataset(
      a, b, seed=config.seed, global_batch_size=config.train.batch_size,
      process_index=process_index, process_count=process_count,
      num_threads=config.data.num_threads, prefetch=config.data.prefetch))


def test_domains(config: ml_collections.ConfigDict, limit: int = 0
                 ) -> tuple[DomainImages, DomainImages]:
  """Each domain's test split (its first `limit` images; 0: all)."""
  return tuple(open_domain(config.data, domain, config.data[domain].test_split)[0]
               .first(limit) for domain in ("domain_a", "domain_b"))


def _build_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict,
                   grid_images=None) -> CycleGanProgram:
  return build_cyclegan_program(config, mesh=mesh, a_channels=data_info["a_channels"],
                                b_channels=data_info["b_channels"],
                                grid_images=grid_images)


def _build_training_program(config: ml_collections.ConfigDict, *, mesh, data_info: dict
                            ) -> CycleGanProgram:
  a, b = test_domains(config, config.eval.num_grid)
  return _build_program(config, mesh=mesh, data_info=data_info, grid_images=(
      scale_to_unit_range(a.images), scale_to_unit_range(b.images)))


def _domain_extractor(workdir: str, domain: DomainImages, name: str, field: str):
  """The classifier in `workdir` (None if empty), checked against the domain's channels."""
  if not workdir:
    return None
  extractor = load_extractor(workdir)
  if extractor.image_shape[-1] != domain.images.shape[-1]:
    raise ConfigError(f"The classifier in {workdir} takes {extractor.image_shape[-1]}-"
                      f"channel images but domain {name} has {domain.images.shape[-1]}; "
                      f"set {field} to a classifier trained on domain {name}.")
  return extractor


def _scorer(config: ml_collections.ConfigDict, extractor_workdir: str | None = None):
  """`(program, state) -> metrics` on the test splits, data and extractor loaded once."""
  a, b = test_domains(config, config.eval.num_examples)
  extractor = _domain_extractor(extractor_workdir or config.eval.extractor_workdir, b,
                                "B", "eval.extractor_workdir")
  # Runs recorded before the field existed have no `eval.extractor_workdir_a`.
  extractor_a = _domain_extractor(config.eval.get("extractor_workdir_a", ""), a, "A",
                                  "eval.extractor_workdir_a")
  real_a, real_b = scale_to_unit_range(a.images), scale_to_unit_range(b.images)

  def score(program: CycleGanProgram, state) -> dict[str, float]:
    fake_b, cycled_a = program.round_trip(state, real_a, "a_to_b")
    fake_a, cycled_b = program.round_trip(state, real_b, "b_to_a")
    metrics = {"cycle_l1_a": float(np.mean(np.abs(cycled_a - real_a))),
               "cycle_l1_b": float(np.mean(np.abs(cycled_b - real_b)))}
    metrics.update(score_translations(fake_b, targets_nhwc=None, reference_nhwc=real_b,
                                      labels_n=a.labels, reference_labels_n=b.labels,
                                      extractor=extractor))
    if extractor_a is not None:   # The same scores of F(B) against real A.
      metrics.update({f"{name}_b_to_a": value for name, value in score_translations(
          fake_a, targets_nhwc=None, reference_nhwc=real_a, labels_n=b.labels,
          reference_labels_n=a.labels, extractor=extractor_a).items()})
    return metrics

  settings = settings_of(
      extractor, direction="a_to_b", domain_a=dict(config.data.domain_a),
      domain_b=dict(config.data.domain_b), num_examples_a=len(a), num_examples_b=len(b),
      seed=config.seed,
      extractor_id_b_to_a=extractor_a.extractor_id if extractor_a is not None else None)
  return score, settings


def _make_evaluator(config: ml_collections.ConfigDict):
  """The periodic scorer (None when `eval.every` is 0); its extractors are checked before
  training whenever one is named, even for the final scores only (or `run.py evaluate`)."""
  if not config.eval.every and not (config.eval.extractor_workdir or
                                    config.eval.extractor_workdir_a):
    return None
  score, _ = _scorer(config)
  return score if config.eval.every else None


def evaluate_cyclegan_run(spec: RunSpec, *, num_samples: int | None = None,
                          seed: int = 0, step: int | None = None,
                          extractor_workdir: str | None = None,
                          reference_split: str | None = None) -> dict[str, Any]:
  """What `run.py evaluate` writes for a CycleGAN run: its test-split scores.

  `num_samples` limits the test images of each domain; `reference_split` is not used
  (the reference is domain B's test split); `seed` is unused (the generators are
  deterministic).
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
  result = evaluate_cyclegan_run(spec_as(workdir, KIND), step=config.train.num_steps)
  if jax.process_index() == 0:
    write_json_atomic(os.path.join(workdir, EVAL_FILE), result)
  return {**logged, **{f"test_{name}": value for name, value in result["metrics"].items()}}


KIND = ExperimentKind(
    name="cyclegan",
    summary="unpaired image-to-image translation (CycleGAN; configs/cyclegan.py)",
    config_hint=CYCLEGAN_HINT,
    validate=validate_cyclegan_config,
    build_program=_build_program,
    build_training_program=_build_training_program,
    open_data=_open_data,
    make_batches=_batches,
    make_evaluator=_make_evaluator,
    after_training=_score_at_end,
    evaluate=evaluate_cyclegan_run,
)
