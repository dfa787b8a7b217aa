"""Non-finite losses, tracked on device so the training loop never waits for them.

Each step records whether any of its metrics (losses and gradient norms, which are
non-finite whenever a gradient or parameter is) was NaN or infinite. The host reads the
record only on logging and checkpoint steps, and can still name the first bad step and
quantity.
"""

import jax
import jax.numpy as jnp
from flax import struct

NONFINITE_MODES = ("stop", "skip")


@struct.dataclass
class DivergenceRecord:
  """Attributes:
    count: steps whose metrics were not all finite (int32 scalar).
    first_step: the first such step, or -1 (int32 scalar).
    first_mask: bit i set when the i-th metric (sorted by name) was non-finite at
      `first_step` (int32 scalar).
  """
  count: jax.Array
  first_step: jax.Array
  first_mask: jax.Array

  @classmethod
  def empty(cls) -> "DivergenceRecord":
    return cls(count=jnp.zeros((), jnp.int32), first_step=-jnp.ones((), jnp.int32),
               first_mask=jnp.zeros((), jnp.int32))

  def update(self, step: jax.Array, metrics: dict[str, jax.Array]
             ) -> tuple["DivergenceRecord", jax.Array]:
    """Records `step`'s metrics; returns the new record and whether all were finite."""
    bad = [~jnp.isfinite(metrics[name]) for name in sorted(metrics)]
    mask = sum(flag.astype(jnp.int32) << index for index, flag in enumerate(bad))
    finite = mask == 0
    is_first = (~finite) & (self.first_step < 0)
    return DivergenceRecord(
        count=self.count + (~finite).astype(jnp.int32),
        first_step=jnp.where(is_first, step, self.first_step),
        first_mask=jnp.where(is_first, mask, self.first_mask)), finite

  def describe(self, metric_names: list[str]) -> str:
    """Host-side: the first non-finite step and quantities, in words."""
    mask = int(self.first_mask)
    names = [name for index, name in enumerate(sorted(metric_names)) if mask >> index & 1]
    return f"{', '.join(names) or 'a metric'} is not finite at step {int(self.first_step)}"


def all_finite(tree) -> jax.Array:
  """Whether every floating-point leaf of `tree` is finite (a bool scalar)."""
  leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
