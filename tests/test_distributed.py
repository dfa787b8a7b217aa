"""Multi-process runs: when `jax.distributed` starts (settings, environment, cluster
detection), and a real 2-process x 4-device run of the tiny DCGAN against the
1-process x 8-device one (`tiny_gan_run`)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from cnnjax.train.distributed import (DistributedError, DistributedSettings,
                                      detected_cluster, plan)

TIMEOUTS = {"initialization_timeout": 300, "heartbeat_timeout_seconds": 100}


def test_one_plain_process_never_initialises():
  assert plan(DistributedSettings(), {}) is None
  assert plan(DistributedSettings(mode="off"), {"SLURM_JOB_ID": "1",
                                                "SLURM_NTASKS": "4"}) is None
  assert plan(DistributedSettings(coordinator_address="h:1", num_processes=1,
                                  process_id=0), {}) is None
  # A one-task SLURM job is one plain process too.
  assert plan(DistributedSettings(), {"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"}) is None


def test_explicit_settings_environment_and_clusters():
  explicit = DistributedSettings(coordinator_address="h:1234", num_processes=2,
                                 process_id=1, timeout_s=7, heartbeat_timeout_s=3)
  assert plan(explicit, {}) == {"coordinator_address": "h:1234", "num_processes": 2,
                                "process_id": 1, "initialization_timeout": 7,
                                "heartbeat_timeout_seconds": 3}
  # JAX reads its own variables, or detects SLURM / a TPU pod itself.
  assert plan(DistributedSettings(), {"JAX_COORDINATOR_ADDRESS": "h:1"}) == TIMEOUTS
  slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "8"}
  assert detected_cluster(slurm) == "slurm" and plan(DistributedSettings(), slurm) == TIMEOUTS
  tpu = {"TPU_WORKER_HOSTNAMES": "t0,t1"}
  assert detected_cluster(tpu) == "tpu" and plan(DistributedSettings(), tpu) == TIMEOUTS
  assert detected_cluster({"TPU_WORKER_HOSTNAMES": "t0"}) is None
  assert plan(DistributedSettings(mode="on"), {}) == TIMEOUTS


@pytest.mark.parametrize("settings, message", [
    (DistributedSettings(mode="off", num_processes=2), "--distributed=off with"),
    (DistributedSettings(coordinator_address="h:1"), "missing --num_processes, --process_id"),
    (DistributedSettings(coordinator_address="h:1", num_processes=2, process_id=2),
     "--process_id=2 must be in [0, 2)"),
    (DistributedSettings(num_processes=0), "--num_processes=0 must be >= 1"),
    (DistributedSettings(timeout_s=0), "are seconds, >= 1"),
    (DistributedSettings(mode="maybe"), "use one of auto, on, off"),
])
def test_inconsistent_settings_are_one_line_errors(settings, message):
  with pytest.raises(DistributedError) as raised:
    plan(settings, {})
  assert message in str(raised.value) and "\n" not in str(raised.value)


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("localhost", 0))
    return probe.getsockname()[1]


def _launch(workdir, data_dir, num_processes: int, *extra: str):
  """Starts `num_processes` run.py processes of the tiny DCGAN, 8 devices in all."""
  port = _free_port()
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count="
         f"{8 // num_processes}"}
  return [subprocess.Popen(
      [sys.executable, "run.py", "--config=configs/dcgan.py:tiny",
       f"--config.data.data_dir={data_dir}", f"--workdir={workdir}",
       f"--coordinator_address=localhost:{port}", f"--num_processes={num_processes}",
       f"--process_id={index}", "--distributed_timeout=60", "--heartbeat_timeout=10",
       *extra], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True) for index in range(num_processes)]


def _final_parameters(workdir):
  """The newest checkpoint's state, restored by this one process (8 devices)."""
  import jax   # After conftest's XLA_FLAGS.
  from cnnjax.runs import gan
  from cnnjax.runs.restore import open_as
  run = open_as(str(workdir), gan.KIND)
  return run.step, jax.device_get(run.state)


def _metrics(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_like_one(tmp_path, tiny_gan_run, data_dir):
  workdir = tmp_path / "two_processes"
  processes = _launch(workdir, data_dir, 2)
  for process in processes:
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
  provenance = json.loads((workdir / "provenance.json").read_text())
  assert json.dumps(provenance).count('"process_count": 2') == 1
  # One set of logs, grids and checkpoints (process 0 writes; orbax coordinates).
  assert len(list((workdir / "tensorboard").rglob("*tfevents*"))) == 1
  assert sorted(p.name for p in (workdir / "samples").iterdir()) == sorted(
      p.name for p in (tiny_gan_run / "samples").iterdir())
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == sorted(
      p.name for p in (tiny_gan_run / "checkpoints").iterdir())
  # Same batches, latents and per-device work; only the cross-process all-reduce (gloo's
  # ring) adds the 8 devices' gradients in another order than XLA's in-process one, so
  # the numbers agree to float32 rounding, not bit for bit.
  two, one = _metrics(workdir), _metrics(tiny_gan_run)
  assert [m["step"] for m in two] == [m["step"] for m in one]
  for row_two, row_one in zip(two, one):
    for name in ("d_loss", "g_loss", "d_real", "d_fake"):
      np.testing.assert_allclose(row_two[name], row_one[name], rtol=1e-5, atol=1e-6)
  # The checkpoints, written by two processes, restore in one, close to one's own.
  import jax
  (step_two, state_two), (step_one, state_one) = (_final_parameters(workdir),
                                                  _final_parameters(tiny_gan_run))
  assert step_two == step_one == 20
  for leaf_two, leaf_one in zip(jax.tree.leaves(state_two), jax.tree.leaves(state_one)):
    np.testing.assert_allclose(np.asarray(leaf_two, np.float64),
                               np.asarray(leaf_one, np.float64), rtol=1e-4, atol=1e-5)


def test_an_unreachable_coordinator_is_a_bounded_one_line_error(tmp_path):
  result = subprocess.run(
      [sys.executable, "run.py", "--config=configs/dcgan.py:tiny",
       f"--workdir={tmp_path / 'run'}", f"--coordinator_address=localhost:{_free_port()}",
       "--num_processes=2", "--process_id=1", "--distributed_timeout=3"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith("error: Could not connect to")
  assert not (tmp_path / "run").exists()


def test_a_malformed_coordinator_address_is_refused():
  from cnnjax.train.distributed import initialize
  with pytest.raises(DistributedError, match="is not host:port"):
    initialize(DistributedSettings(coordinator_address="nohost", num_processes=2,
                                   process_id=1), {})
