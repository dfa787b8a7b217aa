"""Whether a work directory's earlier run may be resumed with a (possibly edited) config.

Fields that only change how a run is observed or how long it goes on may change between
launches; any other change would make the resumed run a different experiment and is
refused.
"""

from typing import Any, Mapping

from cnnjax.errors import WorkdirError

# Dotted config paths (or section prefixes ending in ".") that may change on resume.
HARMLESS_FIELDS = (
    "train.num_steps", "train.log_every", "train.sample_every", "train.num_samples",
    "train.on_nonfinite", "checkpoint.", "data.data_dir", "data.num_threads",
    "data.prefetch", "data.cache_in_memory", "eval.",
)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _is_harmless(path: str) -> bool:
  return any(path == field or (field.endswith(".") and path.startswith(field))
             for field in HARMLESS_FIELDS)


def config_changes(previous: Mapping[str, Any], current: Mapping[str, Any]
                   ) -> dict[str, tuple[Any, Any]]:
  """Every dotted field whose value differs: {path: (previous, current)}."""
  old, new = flatten(previous), flatten(current)
  return {path: (old.get(path), new.get(path))
          for path in sorted(set(old) | set(new)) if old.get(path) != new.get(path)}


def check_resumable(previous: Mapping[str, Any], current: Mapping[str, Any],
                    workdir: str) -> dict[str, tuple[Any, Any]]:
  """Returns the harmless changes; raises `WorkdirError` naming any that are not."""
  changes = config_changes(previous, current)
  refused = {path: values for path, values in changes.items() if not _is_harmless(path)}
  if refused:
    described = ", ".join(f"{path} {old!r} -> {new!r}"
                          for path, (old, new) in refused.items())
    raise WorkdirError(
        f"{workdir} holds a run with a different config ({described}); resume with the "
        "same values or use a new --workdir.")
  return changes
