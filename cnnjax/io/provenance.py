"""What a run needs to be reproduced: `DIR/provenance.json`.

It records the command line (with the environment variables that choose devices), the
seed, the package versions, the git commit and whether the tree had uncommitted changes
(and a hash of them), the devices, the host and the Python version. The resolved config
itself is the run's `config.json`. Each launch or resume rewrites the current record and
appends a short entry to `history`, so a run resumed by other code shows it.
"""

import datetime
import hashlib
import importlib.metadata
import os
import platform
import shlex
import socket
import subprocess
import sys
from typing import Any, Mapping, Sequence

from cnnjax.io.workdir import read_json, write_json_atomic

# The checkout cnnjax runs from (git provenance, sweep commands).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PROVENANCE_FILE = "provenance.json"
PACKAGES = ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "libtpu", "flax",
            "optax", "orbax-checkpoint", "grain", "numpy", "scipy", "tensorflow-datasets",
            "ml-collections", "absl-py", "tensorboardX", "pillow", "mlxtend",
            "matplotlib")
# Environment variables that decide devices or numerics (recorded, and put in front of
# the recorded command).
DEVICE_ENV_PREFIXES = ("XLA_FLAGS", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES",
                       "TPU_VISIBLE_CHIPS", "JAX_ENABLE_X64", "JAX_DEFAULT_MATMUL_PRECISION")
MAX_HISTORY = 50


def package_versions(packages: Sequence[str] = PACKAGES) -> dict[str, str]:
  """Installed versions of `packages` (those not installed are left out)."""
  versions = {}
  for package in packages:
    try:
      versions[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      pass
  return versions


def _git(*args: str) -> str | None:
  try:
    result = subprocess.run(["git", "-C", REPO_ROOT, *args], capture_output=True,
                            text=True, timeout=30, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return result.stdout if result.returncode == 0 else None


def git_state() -> dict[str, Any]:
  """The repository's commit, whether it is dirty, the changed files and a diff hash."""
  commit = _git("rev-parse", "HEAD")
  if commit is None:
    return {"commit": None, "dirty": None, "note": "not a git checkout"}
  status = _git("status", "--porcelain") or ""
  changed = [line[3:] for line in status.splitlines() if line.strip()]
  diff = _git("diff", "HEAD") or ""
  return {"commit": commit.strip(), "dirty": bool(changed), "changed_files": changed[:100],
          "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None}


def jax_devices() -> dict[str, Any] | None:
  """The devices of this process's jax, when jax is already imported (None otherwise)."""
  if "jax" not in sys.modules:
    return None
  jax = sys.modules["jax"]
  devices = jax.devices()
  return {"backend": jax.default_backend(), "process_count": jax.process_count(),
          "process_index": jax.process_index(), "device_count": len(devices),
          "devices": [{"id": device.id, "platform": device.platform,
                       "kind": device.device_kind, "process": device.process_index}
                      for device in devices]}


def device_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
  """The device-choosing environment variables that are set."""
  env = os.environ if env is None else env
  return {name: env[name] for name in DEVICE_ENV_PREFIXES if env.get(name)}


def command_line(argv: Sequence[str], env: Mapping[str, str] | None = None,
                 python: str | None = None) -> str:
  """A shell command that reruns `argv` with Python and the same device variables."""
  assignments = [f"{name}={shlex.quote(value)}"
                 for name, value in device_environment(env).items()]
  return shlex.join([python or "python"] + list(argv)) if not assignments else (
      " ".join(assignments) + " " + shlex.join([python or "python"] + list(argv)))


def provenance_record(config: Any, argv: Sequence[str], *,
                      env: Mapping[str, str] | None = None,
                      devices: Mapping[str, Any] | None = None,
                      written_by: str = "runtime") -> dict[str, Any]:
  """The provenance of a run of `config` started by `argv` (see the module docstring).

  Args:
    config: the run's ConfigDict (or dict); its `seed` is recorded.
    argv: the command's arguments, program first (`sys.argv` of run.py).
    env: the run's environment (default: this process's).
    devices: its devices, when this process is not the run (default: jax's devices).
    written_by: "runtime", "sweep" (the launcher) or "vmap_seeds".
  """
  seed = config.get("seed") if hasattr(config, "get") else None
  return {
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "written_by": written_by,
      "command": command_line(argv, env, python=os.path.basename(sys.executable)),
      "argv": list(argv),
      "cwd": os.getcwd(),
      "seed": seed,
      "config_file": "config.json",
      "git": git_state(),
      "packages": package_versions(),
      "python": platform.python_version(),
      "platform": platform.platform(),
      "host": socket.gethostname(),
      "device_environment": device_environment(env),
      "devices": dict(devices) if devices is not None else jax_devices(),
  }


def write_provenance(workdir: str, config: Any, argv: Sequence[str], *,
                     env: Mapping[str, str] | None = None,
                     devices: Mapping[str, Any] | None = None,
                     written_by: str = "runtime") -> dict[str, Any]:
  """Writes `workdir/provenance.json` (current record plus the history of launches).

  Called by the sweep launcher for each run it starts, by the vectorised-seeds trainer,
  and (one line in the training runtime) by every plain run:
  `write_provenance(workdir, config, sys.argv)`.

  Returns:
    The record written.
  """
  record = provenance_record(config, argv, env=env, devices=devices,
                             written_by=written_by)
  path = os.path.join(workdir, PROVENANCE_FILE)
  history = []
  if os.path.isfile(path):
    try:
      previous = read_json(path)
      history = list(previous.get("history", []))
      if previous.get("devices") and record["devices"] is None:
        record["devices"] = previous["devices"]
    except (OSError, ValueError):
      history = []
  history.append({key: record[key] for key in ("time", "written_by", "command")}
                 | {"git_commit": record["git"].get("commit"),
                    "dirty": record["git"].get("dirty")})
  record["history"] = history[-MAX_HISTORY:]
  os.makedirs(workdir, exist_ok=True)
  write_json_atomic(path, record)
  return record
