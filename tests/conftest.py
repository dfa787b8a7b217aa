"""Test setup: 8 fake CPU devices, configured before jax is imported anywhere.

Compiled programs are cached on disk for the whole session (subprocesses of run.py
included), since compilation dominates the suite's time on CPU.
"""

import importlib.util
import os
import pathlib
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      tempfile.mkdtemp(prefix="cnnjax-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def restored_state(workdir, step: int):
  """The raw `state` item of a run's checkpoint at `step` (no target: arrays as saved)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    return manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore()))["state"]


def load_config(file_name: str, variant: str | None = None):
  """Loads `configs/<file_name>`'s `get_config(variant)` as run.py would."""
  path = REPO_ROOT / "configs" / file_name
  spec = importlib.util.spec_from_file_location(f"configs_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """One TFDS data_dir for the session: each builder prepares at most once."""
  return str(tmp_path_factory.mktemp("tfds"))


def _train_tiny(tmp_path_factory, data_dir: str, name: str, config_file: str,
                variant: str = "tiny") -> pathlib.Path:
  """Trains `configs/<config_file>:<variant>` once into `<basetemp>/<name>`."""
  from cnnjax.runs.registry import train_and_evaluate  # Imports jax: after XLA_FLAGS.
  workdir = tmp_path_factory.getbasetemp() / name
  if not (workdir / "eval.json").exists() and not (workdir / "checkpoints").exists():
    config = load_config(config_file, variant)
    config.data.data_dir = data_dir
    train_and_evaluate(config, str(workdir))
  return workdir


# Finished tiny runs shared by every test file that opens a run (editing, inversion,
# human evaluation, ...): trained at most once per session. Treat them as read-only.
@pytest.fixture(scope="session")
def tiny_gan_run(tmp_path_factory, data_dir) -> pathlib.Path:
  """configs/dcgan.py:tiny on digits (20 steps)."""
  return _train_tiny(tmp_path_factory, data_dir, "tiny_gan", "dcgan.py")


@pytest.fixture(scope="session")
def tiny_cgan_run(tmp_path_factory, data_dir) -> pathlib.Path:
  """configs/cgan.py:tiny on digits: class-conditional."""
  return _train_tiny(tmp_path_factory, data_dir, "tiny_cgan", "cgan.py")


@pytest.fixture(scope="session")
def tiny_vae_run(tmp_path_factory, data_dir) -> pathlib.Path:
  """configs/vae.py:tiny on digits."""
  return _train_tiny(tmp_path_factory, data_dir, "tiny_vae", "vae.py")


@pytest.fixture(scope="session")
def tiny_classifier_run(tmp_path_factory, data_dir) -> pathlib.Path:
  """configs/classifier.py:tiny on digits: an extractor for features and scores."""
  return _train_tiny(tmp_path_factory, data_dir, "tiny_classifier", "classifier.py")


@pytest.fixture(scope="session")
def tiny_shape_classifier_run(tmp_path_factory, data_dir) -> pathlib.Path:
  """configs/classifier.py:tiny on 16 px filled shapes (`shape_pairs/tiny`'s `image`,
  the distribution of `shape_domains/filled_tiny` too): the translation tests' judge."""
  from cnnjax.runs.registry import train_and_evaluate  # Imports jax: after XLA_FLAGS.
  workdir = tmp_path_factory.getbasetemp() / "tiny_shape_classifier"
  if not (workdir / "eval.json").exists():
    config = load_config("classifier.py", "tiny")
    config.data.data_dir = data_dir
    config.data.name = "shape_pairs/tiny"
    config.data.image_size = 16
    train_and_evaluate(config, str(workdir))
  return workdir
