"""The GAN training step, written per device with collectives over a named axis.

`gan_train_step` is pure: dependencies (modules, optimizers, loss) are bound by keyword
with `functools.partial`, so the same function runs under `jax.shard_map` (the default,
see `cnnjax.train.parallel`) or `jax.pmap`.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cnnjax.losses.gan import GanLoss
from cnnjax.train.state import GanState, PlayerState

Batch = dict[str, jax.Array]


def _apply_train(module: nn.Module, params: Any, batch_stats: Any,
                 inputs: jax.Array) -> tuple[jax.Array, Any]:
  """Applies `module` in training mode; returns outputs and new BatchNorm statistics."""
  outputs, updates = module.apply({"params": params, "batch_stats": batch_stats},
                                  inputs, train=True, mutable=["batch_stats"])
  return outputs, updates["batch_stats"]


def _update(player: PlayerState, grads: Any, batch_stats: Any,
            optimizer: optax.GradientTransformation) -> PlayerState:
  updates, opt_state = optimizer.update(grads, player.opt_state, player.params)
  return PlayerState(params=optax.apply_updates(player.params, updates),
                     batch_stats=batch_stats, opt_state=opt_state)


def gan_train_step(state: GanState, batch: Batch, latents_bz: jax.Array, *,
                   generator: nn.Module, discriminator: nn.Module,
                   g_optimizer: optax.GradientTransformation,
                   d_optimizer: optax.GradientTransformation, loss: GanLoss,
                   axis_name: str) -> tuple[GanState, dict[str, jax.Array]]:
  """One discriminator update followed by one generator update, on one device's shard.

  The generator runs forward once: the discriminator update sees its samples without
  gradient, and the generator update back-propagates the updated discriminator's
  verdict through the saved vector-Jacobian product (as PyTorch's DCGAN example does).

  Args:
    state: the replicated training state.
    batch: this device's shard of real data, `image` (b, H, W, C) in [-1, 1].
    latents_bz: this device's shard of the step's latents (b, latent_dim).
    generator, discriminator: the Flax modules (BatchNorm over `axis_name`).
    g_optimizer, d_optimizer: optax transformations of each player.
    loss: the GAN objective.
    axis_name: the mapped axis over which gradients and metrics are averaged.

  Returns:
    The new state and scalar metrics averaged over devices.
  """
  g_state, d_state = state.generator, state.discriminator
  fakes, generator_vjp, g_batch_stats = jax.vjp(
      lambda params: _apply_train(generator, params, g_state.batch_stats, latents_bz),
      g_state.params, has_aux=True)

  def discriminator_loss(d_params):
    real_logits, batch_stats = _apply_train(discriminator, d_params,
                                            d_state.batch_stats, batch["image"])
    fake_logits, batch_stats = _apply_train(discriminator, d_params, batch_stats,
                                            jax.lax.stop_gradient(fakes))
    return loss.discriminator(real_logits, fake_logits), (
        batch_stats, real_logits, fake_logits)

  (d_loss, (d_batch_stats, real_logits, fake_logits)), d_grads = (
      jax.value_and_grad(discriminator_loss, has_aux=True)(d_state.params))
  d_grads = jax.lax.pmean(d_grads, axis_name)
  d_state = _update(d_state, d_grads, d_batch_stats, d_optimizer)

  def generator_loss(fakes):
    logits, batch_stats = _apply_train(discriminator, d_state.params,
                                       d_state.batch_stats, fakes)
    return loss.generator(logits), batch_stats

  (g_loss, d_batch_stats), fakes_grad = jax.value_and_grad(
      generator_loss, has_aux=True)(fakes)
  (g_grads,) = generator_vjp(fakes_grad)
  g_grads = jax.lax.pmean(g_grads, axis_name)
  g_state = _update(g_state, g_grads, g_batch_stats, g_optimizer)
  d_state = d_state.replace(batch_stats=d_batch_stats)

  metrics = {
      "d_loss": d_loss,
      "g_loss": g_loss,
      "d_real": jnp.mean(jax.nn.sigmoid(real_logits)),   # D(x)
      "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),   # D(G(z)) before the D update
      "g_grad_norm": optax.tree.norm(g_grads),
      "d_grad_norm": optax.tree.norm(d_grads),
  }
  metrics = jax.lax.pmean(metrics, axis_name)
  new_state = state.replace(step=state.step + 1, generator=g_state,
                            discriminator=d_state)
  return new_state, metrics
