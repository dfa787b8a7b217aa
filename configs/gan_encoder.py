"""An encoder that inverts a trained GAN's generator (kind `gan_encoder`): E is trained
on G's own samples (z -> G(z) -> E -> z, and G(E(G(z))) against G(z)), then used by
`run.py invert --inversion=encoder|hybrid`.

  python run.py --config=configs/dcgan.py --workdir=workdirs/dcgan_digits
  python run.py --config=configs/gan_encoder.py \
      --config.encoder.generator_workdir=workdirs/dcgan_digits --workdir=workdirs/encoder_digits

Variants (`--config=configs/gan_encoder.py:VARIANT`):
  ''     (the default) 3,000 steps of batch 64 (for the 28x28 DCGAN of configs/dcgan.py).
  tiny   a few channels and steps, for tests (with configs/dcgan.py:tiny's generator).
"""

import ml_collections


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked gan_encoder config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "gan_encoder"
  config.seed = 0

  config.encoder = ml_collections.ConfigDict(dict(
      generator_workdir="",   # The GAN run whose generator is inverted (required).
      generator_step=-1,      # Its checkpoint; -1: the newest at the first launch.
  ))

  config.model = ml_collections.ConfigDict(dict(
      widths=(32, 64, 128),   # Channels of the 4x4 stride-2 convolutions.
      dtype="float32",
  ))

  config.loss = ml_collections.ConfigDict(dict(
      latent_weight=1.0,      # ||E(G(z)) - z||^2
      image_weight=1.0,       # ||G(E(G(z))) - G(z)||^2
  ))

  config.optim = ml_collections.ConfigDict(dict(
      lr=1e-3,                # Adam, cosine decay to 1% over train.num_steps.
      b1=0.9,
      b2=0.999,
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=64,          # Latents per step, split over every local device.
      num_steps=3000,
      log_every=100,
      sample_every=500,       # Grid: fixed G(z) above G(E(G(z))).
      num_samples=16,
      on_nonfinite="stop",    # NaN/inf loss: "stop" with an error, or "skip" the step.
  ))

  config.eval = ml_collections.ConfigDict(dict(
      split="test",           # Real held-out images of the GAN's dataset, in eval.json.
      num_images=1000,        # Fresh latents and real images scored at the end.
      batch_size=200,
  ))

  config.checkpoint = ml_collections.ConfigDict(dict(
      every=500,
      keep=2,
      best_metric="",
      best_mode="min",
      async_save=True,
  ))

  if variant in (None, ""):
    pass
  elif variant == "tiny":
    config.model.widths = (4, 8)
    config.train.batch_size = 16
    config.train.num_steps = 4
    config.train.log_every = 2
    config.train.sample_every = 2
    config.train.num_samples = 8
    config.eval.num_images = 16
    config.eval.batch_size = 16
    config.checkpoint.every = 2
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/gan_encoder.py; use one "
                     "of '', 'tiny'.")
  config.lock()
  return config
