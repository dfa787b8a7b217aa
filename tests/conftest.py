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
