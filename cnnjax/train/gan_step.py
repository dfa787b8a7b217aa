"""The GAN training step, written per device with collectives over a named axis.

`gan_train_step` is pure: dependencies (modules, optimizers, the objective and its
regularisers, the schedule) are bound by keyword with `functools.partial`, so the same
function runs under `jax.shard_map` (the default, see `cnnjax.train.parallel`) or
`jax.pmap`.

A step makes `d_steps` discriminator updates, then one generator update. The
per-example random numbers arrive with the data, drawn at the global batch's shape by
`cnnjax.train.gan_program` and sharded like it, so that they do not depend on the number
of devices: the latents, and in `batch`

  label       (b,) int32   the real images' classes (conditional runs);
  fake_label  (b,) int32   the classes the conditional generator is asked for;
  noise_key   (b, 2) uint32  raw per-example keys; folded with a purpose (`REAL_AUGMENT`,
              ...) they give each augmentation and the gradient penalty its own numbers.

With `d_steps` > 1 every array has a leading axis of `d_steps` chunks: discriminator
update k uses chunk k's real images, fakes from chunk k's latents and its keys; the
generator update reuses the last chunk's fakes.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cnnjax.augment.diffaugment import diff_augment
from cnnjax.losses.gan import GanLoss, auxiliary_classifier_loss
from cnnjax.losses.regularizers import gradient_penalty, r1_penalty
from cnnjax.train.ema import ema_update
from cnnjax.train.state import GanState, PlayerState

Batch = dict[str, jax.Array]
# Purposes folded into each example's `noise_key`: independent numbers for each use.
REAL_AUGMENT, FAKE_AUGMENT, GENERATOR_AUGMENT, PENALTY_MIXING = range(4)


@dataclasses.dataclass(frozen=True)
class Regularization:
  """The objectives' terms besides the adversarial loss, and the discriminator's view.

  Attributes:
    gp_weight: WGAN-GP's lambda (0: off): lambda E[(||grad D(x_hat)||_2 - 1)^2] over
      inputs x_hat mixed per example between real and fake ones (with the real labels).
    r1_weight: R1's gamma (0: off): gamma/2 E||grad D(x)||^2 over real inputs.
    aux_class_weight: AC-GAN: with a discriminator that returns class logits, the
      discriminator adds this times the cross-entropy of real plus fake images against
      their labels; the generator adds it times the fake images' cross-entropy.
    augment_policy: DiffAugment policy applied to everything the discriminator sees,
      real and fake, in both players' updates ("" off). The penalties are taken at the
      augmented inputs.
  """
  gp_weight: float = 0.0
  r1_weight: float = 0.0
  aux_class_weight: float = 0.0
  augment_policy: str = ""


@dataclasses.dataclass(frozen=True)
class EmaSchedule:
  """The generator's weight average (`cnnjax.train.ema`): its decay and first step."""
  decay: float
  start_step: int = 0


def _apply_train(module: nn.Module, params: Any, batch_stats: Any,
                 *inputs: jax.Array) -> tuple[Any, Any]:
  """Applies `module` in training mode; returns outputs and new BatchNorm statistics
  (and spectral-norm state, which lives in the same collection)."""
  outputs, updates = module.apply({"params": params, "batch_stats": batch_stats},
                                  *inputs, train=True, mutable=["batch_stats"])
  return outputs, updates.get("batch_stats", {})


def _logits_and_class_logits(outputs) -> tuple[jax.Array, jax.Array | None]:
  """A discriminator's (logits (b,), class logits (b, K) or None: AC-GAN's)."""
  return outputs if isinstance(outputs, tuple) else (outputs, None)


def _update(player: PlayerState, grads: Any, batch_stats: Any,
            optimizer: optax.GradientTransformation) -> PlayerState:
  updates, opt_state = optimizer.update(grads, player.opt_state, player.params)
  return PlayerState(params=optax.apply_updates(player.params, updates),
                     batch_stats=batch_stats, opt_state=opt_state)


def _example_keys(batch: Batch, purpose: int) -> jax.Array:
  """Each example's key for `purpose`, from its `noise_key`: (b,) typed keys."""
  return jax.vmap(lambda data: jax.random.fold_in(jax.random.wrap_key_data(data),
                                                  purpose))(batch["noise_key"])


def _augment(images_bhwc: jax.Array, batch: Batch, purpose: int, policy: str) -> jax.Array:
  """DiffAugment with each example's own key for `purpose` (identity without a policy)."""
  if not policy:
    return images_bhwc
  return diff_augment(images_bhwc, _example_keys(batch, purpose), policy)


def _labels(batch: Batch, name: str, conditional: bool) -> tuple[jax.Array, ...]:
  """The extra network input `(labels,)` of a conditional run, else ()."""
  return (batch[name],) if conditional else ()


def _discriminator_update(d_state: PlayerState, batch: Batch, fakes_bhwc: jax.Array, *,
                          discriminator: nn.Module, d_optimizer, loss: GanLoss,
                          regularization: Regularization, conditional: bool,
                          axis_name: str) -> tuple[PlayerState, dict[str, jax.Array]]:
  """One discriminator update on real images and (constant) fakes; returns its metrics.

  `conditional`: the discriminator takes labels (`label` with real images, `fake_label`
  with fakes).
  """
  policy = regularization.augment_policy
  real_inputs = _augment(batch["image"], batch, REAL_AUGMENT, policy)
  fake_inputs = _augment(jax.lax.stop_gradient(fakes_bhwc), batch, FAKE_AUGMENT, policy)
  real_labels = _labels(batch, "label", conditional)
  fake_labels = _labels(batch, "fake_label", conditional)

  def discriminator_loss(d_params):
    real_outputs, batch_stats = _apply_train(discriminator, d_params, d_state.batch_stats,
                                             real_inputs, *real_labels)
    fake_outputs, batch_stats = _apply_train(discriminator, d_params, batch_stats,
                                             fake_inputs, *fake_labels)
    real_logits, real_class_logits = _logits_and_class_logits(real_outputs)
    fake_logits, fake_class_logits = _logits_and_class_logits(fake_outputs)
    total = loss.discriminator(real_logits, fake_logits)
    terms = {"d_real": jnp.mean(jax.nn.sigmoid(real_logits)),   # D(x)
             "d_fake": jnp.mean(jax.nn.sigmoid(fake_logits)),   # D(G(z)), before the update
             "real_score": jnp.mean(real_logits), "fake_score": jnp.mean(fake_logits)}
    if real_class_logits is not None:
      class_loss = (auxiliary_classifier_loss(real_class_logits, batch["label"])
                    + auxiliary_classifier_loss(fake_class_logits, batch["fake_label"]))
      total += regularization.aux_class_weight * class_loss
      terms["d_class_loss"] = class_loss

    def critic(inputs_bhwc):  # Logits of real labels; statistics updates are dropped.
      outputs, _ = _apply_train(discriminator, d_params, d_state.batch_stats,
                                inputs_bhwc, *real_labels)
      return _logits_and_class_logits(outputs)[0]

    if regularization.gp_weight:
      penalty = gradient_penalty(critic, real_inputs, fake_inputs,
                                 _example_keys(batch, PENALTY_MIXING))
      total += regularization.gp_weight * penalty
      terms["gradient_penalty"] = penalty
    if regularization.r1_weight:
      penalty = r1_penalty(critic, real_inputs)
      total += regularization.r1_weight * penalty
      terms["r1_penalty"] = penalty
    return total, (batch_stats, terms)

  (d_loss, (batch_stats, terms)), grads = jax.value_and_grad(
      discriminator_loss, has_aux=True)(d_state.params)
  grads = jax.lax.pmean(grads, axis_name)
  new_state = _update(d_state, grads, batch_stats, d_optimizer)
  return new_state, {"d_loss": d_loss, "d_grad_norm": optax.tree.norm(grads), **terms}


def gan_train_step(state: GanState, batch: Batch, latents_bz: jax.Array, *,
                   generator: nn.Module, discriminator: nn.Module,
                   g_optimizer: optax.GradientTransformation,
                   d_optimizer: optax.GradientTransformation, loss: GanLoss,
                   axis_name: str, regularization: Regularization = Regularization(),
                   d_steps: int = 1, conditional_generator: bool = False,
                   conditional_discriminator: bool = False,
                   ema: EmaSchedule | None = None
                   ) -> tuple[GanState, dict[str, jax.Array]]:
  """`d_steps` discriminator updates, then one generator update, on one device's shard.

  The generator runs forward once per discriminator update: the discriminator sees its
  samples without gradient, and the generator update back-propagates the updated
  discriminator's verdict on the last samples through the saved vector-Jacobian
  product (as PyTorch's DCGAN example does).

  Args:
    state: the replicated training state.
    batch: this device's shard of the step's examples (see the module docstring):
      `image` (b, H, W, C) in [-1, 1], and the labels and keys the run needs.
    latents_bz: this device's shard of the step's latents (b, latent_dim).
    generator, discriminator: the Flax modules (BatchNorm over `axis_name`).
    g_optimizer, d_optimizer: optax transformations of each player.
    loss: the adversarial objective.
    axis_name: the mapped axis over which gradients and metrics are averaged.
    regularization: penalties, AC-GAN's class term and DiffAugment.
    d_steps: discriminator updates per generator update (the arrays' chunk axis).
    conditional_generator: the generator takes labels (`fake_label`).
    conditional_discriminator: the discriminator takes labels (`label` with real
      images, `fake_label` with fakes); needs a conditional generator.
    ema: keep `state.generator_ema`, the generator's weight average, if given.

  Returns:
    The new state and scalar metrics averaged over devices (those of the
    discriminator from its last update).
  """
  g_state, d_state = state.generator, state.discriminator
  update_discriminator = lambda d_state, batch, fakes: _discriminator_update(
      d_state, batch, fakes, discriminator=discriminator, d_optimizer=d_optimizer,
      loss=loss, regularization=regularization, conditional=conditional_discriminator,
      axis_name=axis_name)
  if d_steps > 1:  # All but the last chunk: discriminator updates only.
    earlier_chunks = jax.tree.map(lambda x: x[:-1], (batch, latents_bz))
    batch, latents_bz = jax.tree.map(lambda x: x[-1], (batch, latents_bz))

    def critic_update(carry, chunk):
      g_batch_stats, d_state = carry
      chunk_batch, chunk_latents = chunk
      fakes, g_batch_stats = _apply_train(generator, g_state.params, g_batch_stats,
                                          chunk_latents,
                                          *_labels(chunk_batch, "fake_label",
                                                   conditional_generator))
      d_state, _ = update_discriminator(d_state, chunk_batch, fakes)
      return (g_batch_stats, d_state), None

    # Unrolled: XLA's CPU backend runs these convolutions inside a loop several times
    # slower (d_steps is small, so the program only grows by d_steps - 1 updates).
    (g_batch_stats, d_state), _ = jax.lax.scan(
        critic_update, (g_state.batch_stats, d_state), earlier_chunks, unroll=True)
    g_state = g_state.replace(batch_stats=g_batch_stats)

  fakes, generator_vjp, g_batch_stats = jax.vjp(
      lambda params: _apply_train(generator, params, g_state.batch_stats, latents_bz,
                                  *_labels(batch, "fake_label", conditional_generator)),
      g_state.params, has_aux=True)
  d_state, d_metrics = update_discriminator(d_state, batch, fakes)

  def generator_loss(fakes):
    inputs = _augment(fakes, batch, GENERATOR_AUGMENT, regularization.augment_policy)
    outputs, batch_stats = _apply_train(
        discriminator, d_state.params, d_state.batch_stats, inputs,
        *_labels(batch, "fake_label", conditional_discriminator))
    logits, class_logits = _logits_and_class_logits(outputs)
    terms = {}
    total = loss.generator(logits)
    if class_logits is not None:
      terms["g_class_loss"] = auxiliary_classifier_loss(class_logits, batch["fake_label"])
      total += regularization.aux_class_weight * terms["g_class_loss"]
    return total, (batch_stats, terms)

  (g_loss, (d_batch_stats, g_terms)), fakes_grad = jax.value_and_grad(
      generator_loss, has_aux=True)(fakes)
  (g_grads,) = generator_vjp(fakes_grad)
  g_grads = jax.lax.pmean(g_grads, axis_name)
  g_state = _update(g_state, g_grads, g_batch_stats, g_optimizer)
  d_state = d_state.replace(batch_stats=d_batch_stats)
  generator_ema = state.generator_ema
  if ema is not None:
    generator_ema = ema_update(generator_ema, g_state.params, state.step + 1,
                               decay=ema.decay, start_step=ema.start_step)

  metrics = {"g_loss": g_loss, "g_grad_norm": optax.tree.norm(g_grads), **d_metrics,
             **g_terms}
  metrics = jax.lax.pmean(metrics, axis_name)
  new_state = state.replace(step=state.step + 1, generator=g_state,
                            discriminator=d_state, generator_ema=generator_ema)
  return new_state, metrics
