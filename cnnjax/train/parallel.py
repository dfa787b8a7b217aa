"""Data parallelism over every device: a 1-D mesh, shardings, and the jitted step wrapper.

Per-device step functions (collectives over `DATA_AXIS`) run under `jax.shard_map` inside
`jax.jit`, which is what `jax.pmap` itself lowers to since JAX 0.10. The training state is
replicated; batches and per-step latents are sharded along their leading axis.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
# XLA:CPU hands convolutions, matmuls and reductions to YNNPACK by default; with
# convolutions left to XLA's own (Eigen) kernels the DCGAN step ran 1.3x faster on a
# 2-core Xeon (a strided convolution's kernel gradient 2x; experiments/benchmarks/
# RESULTS.md, run E). Keeping YNNPACK's matmuls and reductions measured fastest.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def make_data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh named `DATA_AXIS` over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def compiler_options(mesh: Mesh) -> dict[str, str] | None:
  """XLA options for programs compiled for `mesh` (`jax.jit(compiler_options=...)`):
  `CPU_COMPILER_OPTIONS` on CPU, XLA's defaults (None) elsewhere."""
  return dict(CPU_COMPILER_OPTIONS) if mesh.devices.flat[0].platform == "cpu" else None


def unjitted(step: Callable) -> Callable:
  """The function a `jax.jit` wraps, to trace inside another jit: only a top-level
  jit may set `compiler_options`, so the outer one sets them for both."""
  return step.__wrapped__


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the mesh."""
  return NamedSharding(mesh, P(DATA_AXIS))


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Places a host or device pytree, whole, on every device of `mesh`."""
  return jax.device_put(tree, replicated(mesh))


def to_host(tree: Any) -> Any:
  """`tree`'s arrays as whole numpy arrays on this host.

  An array this process holds entirely is read from its devices; one spread over the
  devices of several processes (a data-sharded output of a multi-process mesh) is
  all-gathered, so every process gets the same whole array. With several processes
  every process must call this (it is a collective).
  """
  def fetch(leaf):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))
  return jax.tree.map(fetch, tree)


def put_global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles this process's slice of a global batch into arrays sharded over `mesh`.

  Args:
    local_batch: arrays whose leading axis is this process's share of the global batch
      (the whole global batch when there is one process).
    mesh: the data mesh.
  """
  sharding = data_sharded(mesh)
  return {name: jax.make_array_from_process_local_data(sharding, value)
          for name, value in local_batch.items()}


def make_parallel_train_step(
    per_device_step: Callable[..., tuple[Any, dict[str, jax.Array]]], *,
    mesh: Mesh, batch_size: int, latent_dim: int, latent_stream: int,
    skip_nonfinite: bool = False,
    draw_examples: Callable[[Any], dict[str, jax.Array]] | None = None,
    num_chunks: int = 1,
) -> Callable[[Any, dict[str, jax.Array]], tuple[Any, dict[str, jax.Array]]]:
  """Jits `per_device_step(state, batch, latents)` data-parallel over `mesh`.

  The step's latents (batch_size, latent_dim) are drawn inside the jitted function from
  the state's key for `latent_stream` (folded with the step) at global shape, then
  sharded like the batch: the numbers do not depend on the number of devices. So are
  the arrays of `draw_examples`, which join the batch.

  Every step's metrics are checked for NaN/inf on device (`state.divergence`); with
  `skip_nonfinite`, a step with non-finite metrics leaves the state unchanged but for
  its step counter and divergence record.

  Args:
    per_device_step: `(state, batch shard, latents shard) -> (state, metrics)`, with
      collectives over `DATA_AXIS`.
    mesh: the data mesh.
    batch_size: the global batch size.
    latent_dim: size of the latent vectors.
    latent_stream: the state's random stream of the latents.
    skip_nonfinite: see above.
    draw_examples: `state -> {name: (batch_size, ...) array}`, more per-example random
      numbers drawn at global shape (e.g. labels, keys from other streams of
      `state.step_key`), added to the batch.
    num_chunks: split the batch, latents and draws into this many consecutive chunks:
      each array becomes (num_chunks, batch_size / num_chunks, ...) with its second
      axis sharded, so that the examples of a chunk do not depend on the device count.

  Returns:
    `step(state, batch) -> (state, metrics)`; the input state is donated.
  """
  example_spec = P(DATA_AXIS) if num_chunks == 1 else P(None, DATA_AXIS)
  # check_vma=False gives pmap's semantics: gradients of replicated parameters stay
  # per-device until the step's own `pmean` (with it, autodiff would insert a psum).
  sharded_step = jax.shard_map(
      per_device_step, mesh=mesh,
      in_specs=(P(), example_spec, example_spec),
      out_specs=(P(), P()), check_vma=False)

  def step(state, batch):
    key = state.step_key(latent_stream)
    latents = jax.random.normal(key, (batch_size, latent_dim))
    if draw_examples is not None:
      batch = {**batch, **draw_examples(state)}
    if num_chunks > 1:
      batch, latents = jax.tree.map(
          lambda x: x.reshape(num_chunks, x.shape[0] // num_chunks, *x.shape[1:]),
          (batch, latents))
    batch, latents = jax.lax.with_sharding_constraint(
        (batch, latents), NamedSharding(mesh, example_spec))
    new_state, metrics = sharded_step(state, batch, latents)
    divergence, finite = state.divergence.update(state.step + 1, metrics)
    if skip_nonfinite:
      new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                               new_state, state)
    new_state = new_state.replace(step=state.step + 1, divergence=divergence)
    return new_state, metrics

  return jax.jit(step, donate_argnums=0,
                 out_shardings=(replicated(mesh), replicated(mesh)),
                 compiler_options=compiler_options(mesh))

