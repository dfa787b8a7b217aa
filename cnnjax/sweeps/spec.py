"""Sweeps as data: a base config, products and zips of overrides, seeds; their runs.

A sweep file (`experiments/NAME.py`) defines `get_sweep()` returning a `Sweep`:

  from cnnjax.sweeps import Sweep, product, zipped

  def get_sweep():
    return Sweep(
        config="configs/dcgan.py", variant="",
        grid=product({"loss.name": ["non_saturating", "hinge"],
                      "model.d_spectral_norm": [False, True]},
                     zipped({"optim.g_lr": [1e-4, 2e-4], "optim.d_lr": [4e-4, 2e-4]})),
        seeds=[0, 1, 2],
        fixed={"train.num_steps": 5000})

`expand` turns it into `Run`s, one per point of the grid and seed, each named by its
overrides (`loss.name=hinge,model.d_spectral_norm=true,seed=1`). Every override is checked
against the base config before anything runs: a field the config does not have, or a
value of the wrong type, is a `ConfigError` naming the field.
"""

import copy
import dataclasses
import difflib
import hashlib
import importlib.util
import itertools
import os
import re
from typing import Any, Mapping, Sequence

import ml_collections

from cnnjax.errors import ConfigError
from cnnjax.io.provenance import REPO_ROOT

SEED_FIELD = "seed"
BASE_SETTING = "base"   # The setting name of a sweep without grid overrides.
MAX_NAME_LENGTH = 200   # Longer names are cut, with a hash of the full name (< 255 bytes).
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._=,+-]")

Point = dict[str, Any]   # One setting's overrides: {dotted field: value}.


@dataclasses.dataclass(frozen=True)
class Axis:
  """A list of override sets (points); axes combine by `product`."""
  points: tuple[Point, ...]

  def __len__(self) -> int:
    return len(self.points)


def _as_axis(factor: "Axis | Mapping[str, Sequence[Any]]") -> Axis:
  if isinstance(factor, Axis):
    return factor
  if not isinstance(factor, Mapping):
    raise ConfigError(f"A sweep factor must be a dict {{field: [values]}} or an Axis, got "
                      f"{type(factor).__name__}.")
  return _product_of_fields(factor)


def _values(field: str, values: Any) -> list[Any]:
  if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
    raise ConfigError(f"The values of {field} must be a list, got {values!r}; write "
                      f"{{{field!r}: [{values!r}]}}.")
  if not values:
    raise ConfigError(f"{field} has an empty list of values; give at least one.")
  return list(values)


def _product_of_fields(fields: Mapping[str, Sequence[Any]]) -> Axis:
  names = list(fields)
  value_lists = [_values(name, fields[name]) for name in names]
  return Axis(tuple(dict(zip(names, combination))
                    for combination in itertools.product(*value_lists)))


def product(*factors: "Axis | Mapping[str, Sequence[Any]]") -> Axis:
  """Every combination of the factors' points.

  Args:
    *factors: dicts `{field: [values]}` (every combination of their fields' values) or
      axes made by `product` or `zipped`.
  """
  points: list[Point] = [{}]
  for factor in factors:
    axis = _as_axis(factor)
    combined = []
    for left in points:
      for right in axis.points:
        shared = set(left) & set(right)
        if shared:
          raise ConfigError(f"{', '.join(sorted(shared))} appears in two factors of a "
                            "sweep product; name each field once.")
        combined.append({**left, **right})
    points = combined
  return Axis(tuple(points))


def zipped(fields: Mapping[str, Sequence[Any]]) -> Axis:
  """The i-th values of every field together: `{a: [1, 2], b: [3, 4]}` -> (1, 3), (2, 4)."""
  names = list(fields)
  value_lists = [_values(name, fields[name]) for name in names]
  lengths = {name: len(values) for name, values in zip(names, value_lists)}
  if len(set(lengths.values())) > 1:
    raise ConfigError(f"Zipped fields need lists of one length, got "
                      f"{', '.join(f'{name}: {n}' for name, n in lengths.items())}.")
  return Axis(tuple(dict(zip(names, values)) for values in zip(*value_lists)))


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A study: one base config, the grid of its overrides, and the seeds of each point.

  Attributes:
    config: the config file, relative to the repository root (as run.py takes it).
    variant: the config variant ("" for none), as after the colon of `--config`.
    grid: the settings (`product` / `zipped`); default: the base config alone.
    seeds: values of the config's `seed` field; every setting runs each of them.
    fixed: overrides of every run, not part of the run names (e.g. train.num_steps).
    vmap_seeds: train the seeds of one setting as one program vectorised over seeds
      (`jax.vmap`; GAN experiments) instead of one run per seed.
    slurm: extra `#SBATCH` options of `--launcher=slurm`, e.g. {"partition": "gpu",
      "time": "04:00:00"}.
    report_metric: the metric of the report's bar chart ("" picks one).
    summary_metrics: the metrics of the report's summary table and bar charts (one
      panel each), e.g. ("fid", "class_accuracy"); empty: `report_metric` alone.
    description: one line on what the study asks.
  """
  config: str
  variant: str = ""
  grid: Axis = Axis(({},))
  seeds: Sequence[int] = (0,)
  fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  vmap_seeds: bool = False
  slurm: Mapping[str, str] = dataclasses.field(default_factory=dict)
  report_metric: str = ""
  summary_metrics: Sequence[str] = ()
  description: str = ""

  @property
  def config_arg(self) -> str:
    """The `--config` value of every run: `FILE` or `FILE:VARIANT`."""
    return f"{self.config}:{self.variant}" if self.variant else self.config


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep.

  Attributes:
    name: its work directory's name, from its overrides and seed.
    setting: the name of its grid point (the name without the seed), shared by seeds.
    seed: its seed.
    overrides: its grid point's overrides (without the seed or the fixed ones).
    config_overrides: every `--config.FIELD=VALUE` override, in command-line order:
      the fixed ones, the grid point's, then the seed.
    num_steps: the run's `train.num_steps` (it is finished at this step).
  """
  name: str
  setting: str
  seed: int
  overrides: Point
  config_overrides: Point
  num_steps: int

  def config_flags(self) -> list[str]:
    """`--config.FIELD=VALUE` arguments that give run.py this run's config."""
    return [f"--config.{field}={format_flag_value(value)}"
            for field, value in self.config_overrides.items()]


@dataclasses.dataclass(frozen=True)
class SweepPlan:
  """A loaded, validated sweep: the spec, where it came from, and its runs."""
  sweep: Sweep
  sweep_path: str
  name: str
  base_config: ml_collections.ConfigDict
  runs: tuple[Run, ...]

  def settings(self) -> dict[str, list[Run]]:
    """The runs of each setting (grid point), in sweep order."""
    grouped: dict[str, list[Run]] = {}
    for run in self.runs:
      grouped.setdefault(run.setting, []).append(run)
    return grouped


def format_flag_value(value: Any) -> str:
  """A value as `--config.FIELD=` takes it (booleans lower-case, floats exact)."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _format_name_value(value: Any) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return f"{value:g}"
  if isinstance(value, (tuple, list)):
    return "-".join(_format_name_value(item) for item in value)
  text = str(value).replace(",", "+")  # Commas separate the fields of a name.
  return text if text else "none"


def run_name(overrides: Mapping[str, Any], seed: int | None = None) -> str:
  """`field=value,...[,seed=N]`, safe as a file name; cut with a hash when too long."""
  parts = [f"{field}={_format_name_value(value)}" for field, value in overrides.items()]
  name = _UNSAFE_NAME_CHARS.sub("_", ",".join(parts))
  if name.startswith("."):
    name = "_" + name[1:]
  seed_part = f"{SEED_FIELD}={seed}" if seed is not None else ""
  room = MAX_NAME_LENGTH - len(seed_part) - 1
  if len(name) > room:  # Cut the overrides, keep the seed readable.
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    name = f"{name[:room - 11]}-{digest}"
  return ",".join(part for part in (name, seed_part) if part) or BASE_SETTING


def _load_module(path: str, kind: str):
  if not os.path.isfile(path):
    raise ConfigError(f"No {kind} file {path}; pass an existing file (e.g. "
                      "experiments/gan_ablation.py).")
  spec = importlib.util.spec_from_file_location(
      f"cnnjax_{kind}_{hashlib.sha1(path.encode()).hexdigest()[:8]}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as error:  # The user's file: any error is reported in one line.
    raise ConfigError(f"The {kind} file {path} failed to load ({type(error).__name__}: "
                      f"{error}); fix it.") from error
  return module


def resolve_config_path(config_file: str) -> str:
  """A config path as run.py would open it from the repository root."""
  if os.path.isabs(config_file):
    return config_file
  return os.path.join(REPO_ROOT, config_file)


def load_base_config(sweep: Sweep) -> ml_collections.ConfigDict:
  """The sweep's locked base config (`get_config(variant)` of its config file)."""
  module = _load_module(resolve_config_path(sweep.config), "config")
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{sweep.config} defines no get_config(variant); point the sweep's "
                      "config at an experiment config such as configs/dcgan.py.")
  try:
    config = module.get_config(sweep.variant) if sweep.variant else module.get_config()
  except Exception as error:  # A bad variant or a broken config file.
    raise ConfigError(f"{sweep.config_arg} failed to build ({type(error).__name__}: "
                      f"{error}).") from error
  return config


def load_sweep(path: str) -> Sweep:
  """Runs a sweep file's `get_sweep()`."""
  module = _load_module(path, "sweep")
  if not hasattr(module, "get_sweep"):
    raise ConfigError(f"The sweep file {path} defines no get_sweep(); it must return a "
                      "cnnjax.sweeps.Sweep.")
  sweep = module.get_sweep()
  if not isinstance(sweep, Sweep):
    raise ConfigError(f"get_sweep() of {path} returned a {type(sweep).__name__}, not a "
                      "cnnjax.sweeps.Sweep.")
  return sweep


def _field_suggestion(section: ml_collections.ConfigDict, key: str, prefix: str) -> str:
  close = difflib.get_close_matches(key, list(section.keys()), n=1)
  if close:
    return f"; did you mean {prefix}{close[0]}?"
  return f"; its fields are {', '.join(prefix + name for name in section.keys())}."


def _check_type(field: str, current: Any, value: Any, source: str) -> None:
  """Raises `ConfigError` when `value` cannot replace `current` (the base value)."""
  expected = type(current)
  if current is None:
    return
  if isinstance(current, bool):
    ok = isinstance(value, bool)
  elif isinstance(current, int):
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(current, float):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif isinstance(current, (tuple, list)):
    ok = isinstance(value, (tuple, list))
  else:
    ok = isinstance(value, expected)
  if not ok:
    raise ConfigError(f"{source} sets {field} to {value!r} ({type(value).__name__}), but "
                      f"the config's {field} is of type {expected.__name__} ({current!r}); "
                      f"give {expected.__name__} values.")


def validate_override(config: ml_collections.ConfigDict, field: str, value: Any,
                      source: str) -> None:
  """Checks that `config` has the dotted `field` and that `value` fits its type.

  Args:
    config: the base config.
    field: a dotted path, e.g. "loss.name".
    value: the override.
    source: who asks, for the message (e.g. "Sweep experiments/x.py").

  Raises:
    ConfigError: naming the field, with the closest existing field when there is one.
  """
  section: Any = config
  keys = field.split(".")
  for depth, key in enumerate(keys):
    prefix = ".".join(keys[:depth]) + ("." if depth else "")
    if not isinstance(section, ml_collections.ConfigDict):
      raise ConfigError(f"{source} overrides {field}, but {prefix[:-1]} is a value, not "
                        "a section, in the config.")
    if key not in section:
      raise ConfigError(f"{source} overrides {field}, a field the config does not "
                        f"have{_field_suggestion(section, key, prefix)}")
    section = section[key]
  if isinstance(section, ml_collections.ConfigDict):
    raise ConfigError(f"{source} overrides {field}, a config section; override its "
                      f"fields ({', '.join(field + '.' + name for name in section)}).")
  _check_type(field, section, value, source)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any],
                    source: str) -> ml_collections.ConfigDict:
  """A copy of `config` with `overrides` applied (each validated first)."""
  config = copy.deepcopy(config)
  for field, value in overrides.items():
    validate_override(config, field, value, source)
    *parents, key = field.split(".")
    section = config
    for parent in parents:
      section = section[parent]
    try:
      setattr(section, key, value)
    except (TypeError, ValueError) as error:
      raise ConfigError(f"{source} sets {field} to {value!r}: {error}") from error
  return config


def expand(sweep: Sweep, base_config: ml_collections.ConfigDict,
           source: str = "The sweep") -> tuple[Run, ...]:
  """The runs of `sweep`: every grid point with every seed, validated and named.

  Raises:
    ConfigError: an unknown field, a wrong type, no seeds, or two runs with one name.
  """
  if not isinstance(sweep.grid, Axis):
    raise ConfigError(f"{source}'s grid must be made by product(...) or zipped(...), got "
                      f"{type(sweep.grid).__name__}.")
  seeds = list(sweep.seeds)
  if not seeds or not all(isinstance(seed, int) and not isinstance(seed, bool)
                          for seed in seeds):
    raise ConfigError(f"{source} needs a list of integer seeds, got {sweep.seeds!r}.")
  if len(set(seeds)) != len(seeds):
    raise ConfigError(f"{source} lists a seed twice: {seeds}.")
  for field in sweep.fixed:
    if field == SEED_FIELD:
      raise ConfigError(f"{source} fixes seed; list seeds in Sweep(seeds=[...]) instead.")
  runs, names = [], {}
  for point in sweep.grid.points:
    if SEED_FIELD in point:
      raise ConfigError(f"{source} sweeps seed in its grid; list seeds in "
                        "Sweep(seeds=[...]) instead.")
    shared = set(point) & set(sweep.fixed)
    if shared:
      raise ConfigError(f"{source} both fixes and sweeps {', '.join(sorted(shared))}; "
                        "keep each field in one place.")
    setting = run_name(point)
    for seed in seeds:
      overrides = {**sweep.fixed, **point, SEED_FIELD: seed}
      config = apply_overrides(base_config, overrides, source)
      name = run_name(point, seed)
      if name in names:
        raise ConfigError(f"{source} has two runs named {name} ({names[name]} and "
                          f"{point}); make the swept values distinct.")
      names[name] = point
      runs.append(Run(name=name, setting=setting, seed=seed, overrides=dict(point),
                      config_overrides=overrides,
                      num_steps=int(config.train.num_steps)))
  return tuple(runs)


def load_plan(sweep_path: str) -> SweepPlan:
  """Loads and validates a sweep file; nothing runs and nothing is written."""
  sweep_path = os.path.abspath(os.path.expanduser(sweep_path))
  sweep = load_sweep(sweep_path)
  base_config = load_base_config(sweep)
  if "train" not in base_config or "num_steps" not in base_config.train:
    raise ConfigError(f"{sweep.config_arg} has no train.num_steps; sweeps run "
                      "training configs.")
  source = f"Sweep {os.path.relpath(sweep_path)}"
  runs = expand(sweep, base_config, source)
  if sweep.vmap_seeds and base_config.get("experiment", "gan") != "gan":
    raise ConfigError(f"{source} asks for vmap_seeds, which trains GAN experiments only; "
                      f"set vmap_seeds=False for {base_config.experiment!r}.")
  name = os.path.splitext(os.path.basename(sweep_path))[0]
  return SweepPlan(sweep=sweep, sweep_path=sweep_path, name=name,
                   base_config=base_config, runs=runs)
