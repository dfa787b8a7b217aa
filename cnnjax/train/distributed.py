"""Multi-process JAX (multi-controller): when and how `jax.distributed` is initialised.

One process per host (or per GPU / TPU host) runs the same command; together they see
every device as one mesh. `initialize` runs before any JAX computation and decides:

- explicit settings (`--coordinator_address`, `--num_processes`, `--process_id`, or
  JAX's own `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`): those;
- a SLURM job step with more than one task (`SLURM_STEP_NUM_TASKS`, else
  `SLURM_NTASKS` > 1), or a multi-host Cloud TPU slice (`TPU_WORKER_HOSTNAMES` lists
  several hosts): JAX's cluster detection reads the addresses and ranks itself;
- otherwise one plain process, and `jax.distributed` is never touched.

`mode="on"` forces JAX's detection, `mode="off"` forbids initialisation. On CPU the
processes' collectives go through gloo. A wrong or unreachable coordinator fails after
`timeout_s` with a one-line `DistributedError`, not a hang.
"""

import dataclasses
import os
import socket
import time
from typing import Mapping, Optional

from cnnjax.errors import CnnjaxError

MODES = ("auto", "on", "off")
EXPLICIT_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


class DistributedError(CnnjaxError):
  """The processes of a multi-process run could not be connected."""


@dataclasses.dataclass(frozen=True)
class DistributedSettings:
  """How to start `jax.distributed` (see the module docstring).

  Attributes:
    mode: "auto", "on" or "off".
    coordinator_address: host:port of process 0's coordinator, or None.
    num_processes, process_id: the run's process count and this process's rank.
    timeout_s: seconds to wait for every process to connect.
    heartbeat_timeout_s: seconds after which a silent process counts as dead (the
      others then stop instead of waiting forever).
  """
  mode: str = "auto"
  coordinator_address: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  timeout_s: int = 300
  heartbeat_timeout_s: int = 100


def _int_env(environ: Mapping[str, str], name: str) -> int:
  try:
    return int(environ.get(name, "") or 0)
  except ValueError:
    return 0


def detected_cluster(environ: Mapping[str, str]) -> Optional[str]:
  """"slurm" or "tpu" when the environment is a multi-process job of one, else None."""
  slurm_tasks = _int_env(environ, "SLURM_STEP_NUM_TASKS") or _int_env(environ,
                                                                      "SLURM_NTASKS")
  if environ.get("SLURM_JOB_ID") and slurm_tasks > 1:
    return "slurm"
  if len([h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1:
    return "tpu"
  return None


def plan(settings: DistributedSettings, environ: Mapping[str, str]) -> Optional[dict]:
  """The keyword arguments of `jax.distributed.initialize`, or None for one plain
  process.

  Raises:
    DistributedError: inconsistent settings (one line saying which).
  """
  if settings.mode not in MODES:
    raise DistributedError(f"--distributed={settings.mode!r}: use one of "
                           f"{', '.join(MODES)}.")
  explicit = {"coordinator_address": settings.coordinator_address,
              "num_processes": settings.num_processes, "process_id": settings.process_id}
  given = [name for name, value in explicit.items() if value is not None]
  from_env = [name for name in EXPLICIT_ENV if environ.get(name)]
  if settings.mode == "off":
    if given:
      raise DistributedError(f"--distributed=off with --{', --'.join(given)}: drop one.")
    return None
  if settings.num_processes is not None and settings.num_processes < 1:
    raise DistributedError(f"--num_processes={settings.num_processes} must be >= 1.")
  if settings.process_id is not None and (settings.process_id < 0 or (
      settings.num_processes is not None and settings.process_id >= settings.num_processes)):
    raise DistributedError(f"--process_id={settings.process_id} must be in [0, "
                           f"{settings.num_processes or 'num_processes'}).")
  if settings.timeout_s < 1 or settings.heartbeat_timeout_s < 1:
    raise DistributedError("--distributed_timeout and --heartbeat_timeout are seconds, "
                           ">= 1.")
  timeouts = {"initialization_timeout": settings.timeout_s,
              "heartbeat_timeout_seconds": settings.heartbeat_timeout_s}
  if given:
    if len(given) < 3 and not from_env:
      missing = [name for name in explicit if name not in given]
      raise DistributedError(f"Multi-process settings need --coordinator_address, "
                             f"--num_processes and --process_id; missing --"
                             f"{', --'.join(missing)}.")
    if settings.num_processes == 1 and settings.process_id in (0, None):
      return None
    return {**{k: v for k, v in explicit.items() if v is not None}, **timeouts}
  if from_env or settings.mode == "on" or detected_cluster(environ):
    return dict(timeouts)   # JAX reads the variables or detects the cluster itself.
  return None


def initialize(settings: DistributedSettings,
               environ: Optional[Mapping[str, str]] = None) -> bool:
  """Initialises `jax.distributed` when `plan` says so; True if it did.

  Raises:
    DistributedError: bad settings, or the processes did not all connect in time.
  """
  environ = os.environ if environ is None else environ
  arguments = plan(settings, environ)
  if arguments is None:
    return False
  address = arguments.get("coordinator_address") or environ.get("JAX_COORDINATOR_ADDRESS")
  if address and arguments.get("process_id", 1) != 0:
    # JAX's client aborts the process (no Python exception) when it cannot reach the
    # coordinator: wait for the port here first, so that failure is a one-line error.
    _wait_for_coordinator(address, settings.timeout_s)
  import jax  # Only now: a single plain process never needs it here.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  try:
    jax.distributed.initialize(**arguments)
  except Exception as error:  # noqa: BLE001  (JAX raises RuntimeError/XlaRuntimeError)
    where = arguments.get("coordinator_address") or environ.get(
        "JAX_COORDINATOR_ADDRESS") or "the detected cluster's coordinator"
    reason = " ".join(str(error).split())[:300]
    raise DistributedError(
        f"Could not connect to {where} within {settings.timeout_s} s ({reason}); check "
        "the coordinator address and that every process was started.") from None
  return True


def _wait_for_coordinator(address: str, timeout_s: int) -> None:
  """Returns once `host:port` accepts a TCP connection; raises after `timeout_s`."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise DistributedError(f"--coordinator_address={address!r} is not host:port.")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host, int(port)), timeout=1):
        return
    except OSError as error:
      if time.monotonic() >= deadline:
        raise DistributedError(
            f"Could not connect to {address} within {timeout_s} s ({error}); check the "
            "coordinator address and that process 0 was started.") from None
      time.sleep(0.2)
