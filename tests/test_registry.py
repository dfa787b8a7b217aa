"""The experiment registry: every kind declared once, found by name, trainable by the
shared runtime, openable from its work directory; a new kind is one module and one entry."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from flax import struct

from cnnjax.errors import ConfigError
from cnnjax.runs import registry
from cnnjax.runs.kind import ExperimentKind
from cnnjax.runs.opening import open_run, read_run
from cnnjax.runs.outputs import evaluate_run, sample_to_png
from cnnjax.train import parallel
from cnnjax.train.divergence import DivergenceRecord
from cnnjax.train.loop import TrainData
from cnnjax.train.state import base_key_data


def test_every_kind_is_registered_once_under_its_config_name():
  assert set(registry.KINDS) >= {"gan", "vae", "classifier"}
  for name, kind in registry.KINDS.items():
    assert kind.name == name and kind.summary and kind.config_hint.startswith("python run.py")
    assert callable(kind.validate) and callable(kind.build_program)
  assert registry.get_kind("vae") is registry.KINDS["vae"]
  assert registry.kind_of(ml_collections.ConfigDict({"seed": 0})).name == "gan"


def test_an_unknown_kind_is_a_one_line_error_listing_the_known_ones():
  with pytest.raises(ConfigError, match="Unknown experiment 'pix2pixx': use one of gan, vae, "
                     "classifier"):
    registry.get_kind("pix2pixx")


# A kind defined entirely here, as a new module would: the shared runtime trains it
# (checkpoints, resume, metrics) and the commands open it, with no other code changed.

@struct.dataclass
class _WalkState:
  step: jax.Array
  rng: jax.Array
  position: jax.Array
  divergence: DivergenceRecord


@dataclasses.dataclass(frozen=True)
class _WalkProgram:
  mesh: jax.sharding.Mesh
  init_state: callable
  train_step: callable

  def grids(self, state):
    return {"walk": jnp.broadcast_to(jnp.tanh(state.position), (4, 4, 4, 1))}


def _walk_step(state, batch):
  assert batch == {}  # No data: the program makes its own inputs.
  key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  position = state.position + jax.random.normal(key)
  divergence, _ = state.divergence.update(state.step + 1, {"position": position})
  return state.replace(step=state.step + 1, position=position,
                       divergence=divergence), {"position": position}


def _build_walk(config, *, mesh, data_info):
  assert data_info["name"] == "none"
  init = lambda: _WalkState(step=jnp.zeros((), jnp.int32), rng=base_key_data(config.seed),
                            position=jnp.zeros(()), divergence=DivergenceRecord.empty())
  return _WalkProgram(mesh=mesh,
                      init_state=jax.jit(init, out_shardings=parallel.replicated(mesh)),
                      train_step=jax.jit(_walk_step, donate_argnums=0))


def _validate_walk(config, num_devices):
  if config.train.num_steps < 0:
    raise ConfigError(f"train.num_steps must be >= 0, got {config.train.num_steps}.")


WALK = ExperimentKind(
    name="walk", summary="a random walk (a test kind)",
    config_hint="python run.py --config=walk.py --workdir=DIR",
    validate=_validate_walk, build_program=_build_walk,
    open_data=lambda config: TrainData(source=None, info={
        "name": "none", "split": "", "image_shape": [4, 4, 1], "num_classes": None}),
    make_batches=lambda config, data, **_: None)


def _walk_config(num_steps: int) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict({
      "experiment": "walk", "seed": 3,
      "train": {"num_steps": num_steps, "log_every": 2, "sample_every": 4,
                "on_nonfinite": "stop"},
      "checkpoint": {"every": 3, "keep": 2, "best_metric": "", "best_mode": "min",
                     "async_save": False},
      "eval": {"every": 0}})
  config.lock()
  return config


@pytest.fixture
def walk_kind(monkeypatch):
  monkeypatch.setitem(registry.KINDS, "walk", WALK)
  return WALK


def test_a_new_kind_trains_resumes_and_opens_through_the_registry(walk_kind, tmp_path):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  registry.train_and_evaluate(_walk_config(8), str(straight))
  registry.train_and_evaluate(_walk_config(5), str(resumed))
  registry.train_and_evaluate(_walk_config(8), str(resumed))
  assert read_run(str(resumed)).kind is walk_kind
  run_a, run_b = open_run(str(straight)), open_run(str(resumed))
  assert run_a.step == run_b.step == 8
  assert float(run_a.state.position) == float(run_b.state.position) != 0.0
  assert json.loads((straight / "data_info.json").read_text())["name"] == "none"
  assert (straight / "walk" / "grid_000008.png").is_file()
  lines = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
  assert [line["step"] for line in lines] == [2, 4, 6, 8]
  assert open_run(str(straight), step=6).step == 6


def test_commands_say_what_a_kind_cannot_do(walk_kind, tmp_path):
  registry.train_and_evaluate(_walk_config(3), str(tmp_path))
  with pytest.raises(ConfigError, match="'walk' run .* has nothing to sample"):
    sample_to_png(str(tmp_path), num=4, seed=0, out=str(tmp_path / "s.png"))
  with pytest.raises(ConfigError, match="has nothing to evaluate"):
    evaluate_run(str(tmp_path))
  with pytest.raises(ConfigError, match="holds a 'walk' run, not a 'gan' run"):
    read_run(str(tmp_path), kinds=("gan",))
