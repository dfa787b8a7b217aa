"""The devices of a local sweep, split into groups, each chosen by environment variables.

The launcher itself never initialises an accelerator: with `JAX_PLATFORMS=cpu` the fake
CPU devices are counted from `XLA_FLAGS`; otherwise a child process asks jax. A GPU group
is chosen with `CUDA_VISIBLE_DEVICES`, a CPU group with
`--xla_force_host_platform_device_count` (that many fake devices); a TPU host runs one
process at a time on every chip.
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
from typing import Sequence

from absl import logging

from cnnjax.errors import ConfigError

_CPU_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


@dataclasses.dataclass(frozen=True)
class Devices:
  """The devices a sweep launches on.

  Attributes:
    platform: "cpu", "gpu" or "tpu".
    ids: their ids, as jax numbers them in this process.
    kinds: their kinds (e.g. "NVIDIA H100 80GB HBM3").
    visible: for GPUs, the physical ids behind `ids` (CUDA_VISIBLE_DEVICES order).
  """
  platform: str
  ids: tuple[int, ...]
  kinds: tuple[str, ...]
  visible: tuple[str, ...] = ()


def _query_devices(env: dict[str, str]) -> Devices:
  """Asks jax, in a child process (so this one never holds an accelerator)."""
  code = ("import json, jax; d = jax.local_devices(); print(json.dumps({'platform': "
          "d[0].platform, 'ids': [x.id for x in d], 'kinds': [x.device_kind for x in d]}))")
  child_env = {**env, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env, timeout=300, check=False)
  if result.returncode != 0:
    last = (result.stderr.strip().splitlines() or ["no output"])[-1]
    raise ConfigError(f"Could not list the devices with jax ({last}); check the jax "
                      "installation.")
  found = json.loads(result.stdout.strip().splitlines()[-1])
  visible = tuple(item.strip() for item in env.get("CUDA_VISIBLE_DEVICES", "").split(",")
                  if item.strip())
  if found["platform"] == "gpu" and len(visible) != len(found["ids"]):
    visible = tuple(str(index) for index in range(len(found["ids"])))
  return Devices(platform=found["platform"], ids=tuple(found["ids"]),
                 kinds=tuple(found["kinds"]), visible=visible)


def detect_devices(env: dict[str, str] | None = None) -> Devices:
  """The local devices: from XLA_FLAGS when JAX_PLATFORMS=cpu, else by asking jax."""
  env = dict(os.environ if env is None else env)
  if env.get("JAX_PLATFORMS", "").split(",")[0] == "cpu":
    match = _CPU_DEVICE_FLAG.search(env.get("XLA_FLAGS", ""))
    count = int(match.group(1)) if match else 1
    return Devices(platform="cpu", ids=tuple(range(count)), kinds=("cpu",) * count)
  return _query_devices(env)


def device_groups(devices: Devices, devices_per_run: int | None) -> list[tuple[int, ...]]:
  """Disjoint groups of `devices_per_run` devices (default: 1 GPU, or all of a CPU/TPU).

  Raises:
    ConfigError: more devices per run than there are, or a TPU split.
  """
  count = len(devices.ids)
  if devices_per_run is None:
    devices_per_run = 1 if devices.platform == "gpu" else count
  if devices_per_run <= 0 or devices_per_run > count:
    raise ConfigError(f"--devices_per_run={devices_per_run} does not fit the {count} "
                      f"{devices.platform} devices; use 1 to {count}.")
  if devices.platform == "tpu" and devices_per_run != count:
    raise ConfigError(f"TPU runs use every chip of the host; drop --devices_per_run "
                      f"(or set it to {count}), or use vmap_seeds to fill the chips.")
  if count % devices_per_run:
    logging.warning("%d of the %d devices stay idle: --devices_per_run=%d does not "
                    "divide them.", count % devices_per_run, count, devices_per_run)
  return [devices.ids[start:start + devices_per_run]
          for start in range(0, count - devices_per_run + 1, devices_per_run)]


def group_environment(devices: Devices, group: Sequence[int],
                      base_env: dict[str, str]) -> dict[str, str]:
  """The environment of a process that should see only `group`."""
  env = dict(base_env)
  if devices.platform == "gpu":
    env["CUDA_VISIBLE_DEVICES"] = ",".join(devices.visible[devices.ids.index(device)]
                                           for device in group)
  elif devices.platform == "cpu":
    flags = _CPU_DEVICE_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join(
        flags + [f"--xla_force_host_platform_device_count={len(group)}"])
  return env
