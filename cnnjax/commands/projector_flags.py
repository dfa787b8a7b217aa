"""Flags of the GAN-inversion projector, shared by the commands that invert images
(`invert`, and `edit`'s masked inversion for inpainting).

Only absl is imported (flag errors come before JAX); `projector_settings()` returns the
keyword arguments of `cnnjax.editing.inversion.ProjectorSettings`.
"""

from absl import flags

from cnnjax.commands import common

PROJECTOR_STEPS = flags.DEFINE_integer("projector_steps", 500, "Inversion: Adam steps "
                                       "on the latent (StyleGAN2's projector).")
PROJECTOR_LR = flags.DEFINE_float("projector_lr", 0.1, "Inversion: peak learning rate "
                                  "of the projector's ramped schedule.")
PROJECTOR_NOISE = flags.DEFINE_float("projector_noise", 0.05, "Inversion: initial latent "
                                     "noise (times the latents' std), decaying to 0.")
PIXEL_WEIGHT = flags.DEFINE_float("pixel_weight", 1.0, "Inversion: weight of the pixel "
                                  "MSE.")
FEATURE_WEIGHT = flags.DEFINE_float("feature_weight", 1.0, "Inversion: weight of the "
                                    "feature distance (features of --extractor_workdir).")
ENCODER_WEIGHT = flags.DEFINE_float("encoder_weight", 0.0, "Inversion: weight of the "
                                    "in-domain regulariser ||z - E(G(z))||^2 (needs an "
                                    "encoder run).")


def projector_settings() -> dict[str, float | int]:
  """The flags as `ProjectorSettings` keyword arguments; a one-line error if invalid."""
  if PROJECTOR_STEPS.value <= 0:
    common.fail(f"--projector_steps must be positive, got {PROJECTOR_STEPS.value}.")
  for flag in (PROJECTOR_LR,):
    if not flag.value > 0:
      common.fail(f"--{flag.name} must be positive, got {flag.value}.")
  for flag in (PROJECTOR_NOISE, PIXEL_WEIGHT, FEATURE_WEIGHT, ENCODER_WEIGHT):
    if not flag.value >= 0:
      common.fail(f"--{flag.name} must be >= 0, got {flag.value}.")
  return {"num_steps": PROJECTOR_STEPS.value, "learning_rate": PROJECTOR_LR.value,
          "noise_scale": PROJECTOR_NOISE.value, "pixel_weight": PIXEL_WEIGHT.value,
          "feature_weight": FEATURE_WEIGHT.value, "encoder_weight": ENCODER_WEIGHT.value}
