"""Attribute vector arithmetic in a generator's latent space (pure functions).

An attribute is a scalar read off an image by the factor model (`cnnjax.runs.factors`):
`x`, `y`, `scale` (shapes' factors in their own units), `hue` (cos 2*pi*hue: toward
red > 0, toward cyan < 0), `hue_sin` (sin 2*pi*hue: toward yellow-green > 0, violet < 0),
`rotation` (cos of the angle), or a class name (`circle`, `square`, ...: the class
probability). Latents are labelled positive where the attribute is above its median
(a class: where the image is of that class).

Directions (unit vectors (Z,)): `mean_difference_direction` (mean positive latent minus
mean negative latent) and `linear_direction` (the normal of a logistic-regression
boundary, as InterFaceGAN's SVM normal); `conditional_direction` projects other
attributes' directions out (InterFaceGAN's conditional manipulation). `edit_latents`
moves latents along a direction by each strength; `measure_edits` scores edited images.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cnnjax.data.factors import CIRCULAR_PERIODS, FACTOR_NAMES
from cnnjax.data.shapes import SHAPE_NAMES
from cnnjax.errors import ConfigError

# Continuous attributes: name -> (factor read, transform of its raw value).
CONTINUOUS_ATTRIBUTES = {
    "x": ("x", None), "y": ("y", None), "scale": ("scale", None),
    "hue": ("hue", np.cos), "hue_sin": ("hue", np.sin), "rotation": ("rotation", np.cos),
}
ATTRIBUTES = (*CONTINUOUS_ATTRIBUTES, *SHAPE_NAMES)
METHODS = ("mean_difference", "linear")


def check_attribute(name: str) -> None:
  """Raises `ConfigError` for an unknown attribute (listing the known ones)."""
  if name not in ATTRIBUTES:
    raise ConfigError(f"Unknown attribute {name!r}: use one of {', '.join(ATTRIBUTES)}.")


def attribute_factor(name: str) -> str | None:
  """The factor an attribute reads (None for a class attribute)."""
  check_attribute(name)
  return CONTINUOUS_ATTRIBUTES[name][0] if name in CONTINUOUS_ATTRIBUTES else None


def attribute_values(name: str, class_probs_nk: np.ndarray,
                     factors_nf: np.ndarray) -> np.ndarray:
  """The attribute of N images (N,) from class probabilities (N, K) (one-hot for ground
  truth) and raw factors (N, F) in `FACTOR_NAMES` order."""
  check_attribute(name)
  if name in SHAPE_NAMES:
    return np.asarray(class_probs_nk[:, SHAPE_NAMES.index(name)], np.float64)
  factor, transform = CONTINUOUS_ATTRIBUTES[name]
  value_n = np.asarray(factors_nf[:, FACTOR_NAMES.index(factor)], np.float64)
  if transform is None:
    return value_n
  return transform(value_n * (2 * np.pi / CIRCULAR_PERIODS[factor]))


def attribute_labels(name: str, values_n: np.ndarray) -> np.ndarray:
  """Binary labels (N,) bool: a class attribute's probability > 0.5; for a continuous
  one, the upper half by rank (a median split that stays balanced under ties).

  Raises:
    ConfigError: a continuous attribute with the same value everywhere.
  """
  if name in SHAPE_NAMES:
    return values_n > 0.5
  if np.ptp(values_n) == 0:
    raise ConfigError(f"Attribute {name!r} has the same value on every labelled latent; "
                      "use a trained factor model and generator.")
  positive_n = np.zeros(len(values_n), bool)
  positive_n[np.argsort(values_n, kind="stable")[len(values_n) // 2:]] = True
  return positive_n


def _unit(vector_z: np.ndarray) -> np.ndarray:
  norm = np.linalg.norm(vector_z)
  if not np.isfinite(norm) or norm == 0:
    raise ConfigError("The attribute direction is zero: the labelled latents do not "
                      "separate; label more latents (--num_label).")
  return (vector_z / norm).astype(np.float32)


def _check_labels(positive_n: np.ndarray) -> None:
  if positive_n.all() or not positive_n.any():
    raise ConfigError("Every labelled latent has the same attribute label; label more "
                      "latents (--num_label) or pick another attribute.")


def mean_difference_direction(latents_nz: np.ndarray, positive_n: np.ndarray) -> np.ndarray:
  """Unit (Z,): mean latent of the positives minus mean latent of the negatives."""
  positive_n = np.asarray(positive_n, bool)
  _check_labels(positive_n)
  latents_nz = np.asarray(latents_nz, np.float64)
  return _unit(latents_nz[positive_n].mean(0) - latents_nz[~positive_n].mean(0))


@functools.partial(jax.jit, static_argnames=("num_steps",))
def _fit_logistic(latents_nz, targets_n, *, num_steps, learning_rate, l2):
  optimizer = optax.adam(learning_rate)
  mean_z = latents_nz.mean(0)
  scale_z = jnp.maximum(latents_nz.std(0), 1e-6)
  centred_nz = (latents_nz - mean_z) / scale_z

  def loss_fn(params):
    logits_n = centred_nz @ params["w"] + params["b"]
    return (optax.sigmoid_binary_cross_entropy(logits_n, targets_n).mean()
            + l2 * jnp.sum(jnp.square(params["w"])))

  def update(carry, _):
    params, opt_state = carry
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(params, updates), opt_state), None

  params = {"w": jnp.zeros(latents_nz.shape[1]), "b": jnp.zeros(())}
  (params, _), _ = jax.lax.scan(update, (params, optimizer.init(params)), None,
                                length=num_steps)
  return params["w"] / scale_z   # The boundary's normal in the latent space itself.


def linear_direction(latents_nz: np.ndarray, positive_n: np.ndarray, *,
                     num_steps: int = 500, learning_rate: float = 0.05,
                     l2: float = 1e-4) -> np.ndarray:
  """Unit (Z,): the normal of an L2-regularised logistic-regression boundary between
  positive and negative latents (full-batch Adam on standardised latents, the normal
  mapped back to the latent space), pointing to the positives."""
  positive_n = np.asarray(positive_n, bool)
  _check_labels(positive_n)
  normal_z = _fit_logistic(jnp.asarray(latents_nz, jnp.float32),
                           jnp.asarray(positive_n, jnp.float32), num_steps=num_steps,
                           learning_rate=learning_rate, l2=l2)
  return _unit(np.asarray(normal_z, np.float64))


def attribute_direction(method: str, latents_nz: np.ndarray,
                        positive_n: np.ndarray) -> np.ndarray:
  """`mean_difference_direction` or `linear_direction` by name."""
  if method == "mean_difference":
    return mean_difference_direction(latents_nz, positive_n)
  if method == "linear":
    return linear_direction(latents_nz, positive_n)
  raise ConfigError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")


def conditional_direction(primary_z: np.ndarray, conditions_cz: np.ndarray) -> np.ndarray:
  """Unit (Z,): `primary_z` with its components along every condition direction
  (C, Z) removed (the conditions are orthonormalised first), so that moving along it
  leaves the conditioned attributes' linear scores unchanged."""
  conditions_cz = np.asarray(conditions_cz, np.float64).reshape(-1, len(primary_z))
  if not len(conditions_cz):
    return _unit(np.asarray(primary_z, np.float64))
  basis_zc, _ = np.linalg.qr(conditions_cz.T)
  primary_z = np.asarray(primary_z, np.float64)
  residual_z = primary_z - basis_zc @ (basis_zc.T @ primary_z)
  if np.linalg.norm(residual_z) < 1e-6 * np.linalg.norm(primary_z):
    raise ConfigError("The attribute's direction lies in the span of the conditioned "
                      "ones; condition on fewer attributes.")
  return _unit(residual_z)


def edit_latents(latents_nz: jax.Array, direction_z: jax.Array,
                 strengths_s: jax.Array) -> jax.Array:
  """(S, N, Z): each latent moved by each strength along `direction_z`."""
  return (latents_nz[None] + strengths_s[:, None, None] * direction_z[None, None]
          ).astype(latents_nz.dtype)


def _factor_change(before_nf: np.ndarray, after_snf: np.ndarray) -> np.ndarray:
  """|change| of each raw factor (S, N, F), circular factors along the shorter arc."""
  change_snf = after_snf - before_nf[None]
  for name, period in CIRCULAR_PERIODS.items():
    index = FACTOR_NAMES.index(name)
    change_snf[..., index] = (change_snf[..., index] + period / 2) % period - period / 2
  return np.abs(change_snf)


def measure_edits(attribute: str, strengths_s: np.ndarray, threshold: float,
                  probs_before_nk: np.ndarray, factors_before_nf: np.ndarray,
                  probs_after_snk: np.ndarray, factors_after_snf: np.ndarray) -> list[dict]:
  """Scores edits by the factor model's reading of the images before and after.

  Args:
    attribute: the edited attribute.
    strengths_s: the edit strengths (S,); a positive one asks the attribute to rise.
    threshold: the change (in the attribute's units) that counts as moved.
    probs_before_nk, factors_before_nf: class probabilities and factors of the
      unedited images (N, K), (N, F).
    probs_after_snk, factors_after_snf: the same for each strength (S, N, K), (S, N, F).

  Returns:
    One dict per strength: `strength`; `attribute_change` (mean signed change);
    `success_rate` (fraction moved the asked way by >= threshold; None at strength 0);
    `other_factors_mean_abs_change` ({factor: mean |change|} over the factors it
    does not read); `class_change_rate` (fraction whose predicted class changed; for a
    continuous attribute) .
  """
  before_n = attribute_values(attribute, probs_before_nk, factors_before_nf)
  own = attribute_factor(attribute)
  changes_snf = _factor_change(np.asarray(factors_before_nf, np.float64),
                               np.asarray(factors_after_snf, np.float64))
  classes_before_n = np.argmax(probs_before_nk, -1)
  results = []
  for index, strength in enumerate(np.asarray(strengths_s, np.float64)):
    after_n = attribute_values(attribute, probs_after_snk[index], factors_after_snf[index])
    change_n = after_n - before_n
    result = {"strength": float(strength), "attribute_change": float(change_n.mean()),
              "success_rate": (None if strength == 0 else
                               float(np.mean(np.sign(strength) * change_n >= threshold))),
              "other_factors_mean_abs_change": {
                  name: float(changes_snf[index, :, f].mean())
                  for f, name in enumerate(FACTOR_NAMES) if name != own}}
    if own is not None:
      result["class_change_rate"] = float(np.mean(
          np.argmax(probs_after_snk[index], -1) != classes_before_n))
    results.append(result)
  return results
