"""Convolutional VAEs on handwritten digits: the plain VAE, the beta-VAE and the CVAE.

Variants (`--config=configs/vae.py:VARIANT`, several joined by commas: `cvae,tiny`):
  (none)   VAE on `digits` at 28x28 with a dynamically binarised Bernoulli likelihood,
           trained in minutes on a 2-core CPU.
  beta     beta-VAE: beta = 4 with a linear KL warm-up over the first 500 steps.
  cvae     conditional VAE: the digit's label enters the encoder and the decoder.
  shapes   VAE on the procedural `shapes` dataset at 32x32, 3 channels, with a
           discretised logistic likelihood.
  tiny     a few-channel model for tests: compiles fast, trains a handful of steps.
"""

import ml_collections

from configs import dcgan

VARIANTS = ("beta", "cvae", "shapes", "tiny")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config for `variant` (comma-separated variants)."""
  config = ml_collections.ConfigDict()
  config.experiment = "vae"
  config.seed = 0

  config.data = dcgan.data_config()

  config.model = ml_collections.ConfigDict(dict(
      name="conv_vae",
      latent_dim=16,
      encoder_width=32,  # Encoder channels after the first convolution (doubled per level).
      decoder_width=32,  # Decoder channels before the last upsampling.
      upsample="fast",   # "fast" (cnnjax.models.upsample) or "flax" (nn.ConvTranspose).
      conditional=False,  # CVAE: condition encoder and decoder on the dataset's labels.
  ))

  config.likelihood = ml_collections.ConfigDict(dict(
      name="bernoulli",  # "bernoulli" ([0, 1] images), "gaussian", "logistic" (8-bit).
      binarize=True,     # bernoulli: binarise every batch by sampling (dynamically).
      gaussian_scale=0.0,  # gaussian: fixed standard deviation on [-1, 1]; 0 = learned.
      num_bins=256,      # logistic: levels of the discretisation.
  ))

  config.loss = ml_collections.ConfigDict(dict(
      beta=1.0,          # Weight of the KL term (beta-VAE: > 1).
      kl_warmup_steps=0,  # The KL weight grows linearly from 0 to beta over these steps.
  ))

  config.optim = ml_collections.ConfigDict(dict(
      lr=1e-3,
      b1=0.9,
      b2=0.999,
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=64,     # Global batch, split over every local device.
      num_steps=5000,
      log_every=100,
      sample_every=500,
      num_samples=64,    # Images in each sample grid (a square number tiles best).
      on_nonfinite="stop",  # NaN/inf loss: "stop" with an error, or "skip" the step.
  ))

  config.eval = ml_collections.ConfigDict(dict(
      # Likelihood of held-out images (cnnjax.evaluation.vae_likelihood).
      likelihood_split="test",  # Split of the periodic ELBO, the reconstruction grids
                         # and the final IWAE bound.
      elbo_every=250,    # Steps between held-out ELBOs (and the last step); 0 = never.
                         # Logged at the next log step as test_neg_elbo, with test_step.
      elbo_num_examples=1000,  # Held-out images of the periodic ELBO (the first ones).
      num_importance=1000,  # IWAE samples k of the final evaluation; 0 = ELBO only.
      importance_chunk=125,  # Importance samples decoded at once (bounds the memory).
      likelihood_batch_size=40,  # Images per likelihood call (a multiple of the devices).
      at_end=True,       # Write workdir/likelihood.json when training completes.
      # Sample quality of prior samples, as in configs/dcgan.py.
      **dcgan.sample_quality_fields(),
  ))

  config.checkpoint = dcgan.checkpoint_config()

  variants = [name for name in (variant or "").split(",") if name]
  for name in variants:
    if name not in VARIANTS:
      raise ValueError(f"Unknown variant {name!r} of configs/vae.py; use one or more "
                       f"(comma-separated) of {', '.join(VARIANTS)}.")
  if "beta" in variants:
    config.loss.beta = 4.0
    config.loss.kl_warmup_steps = 500
  if "cvae" in variants:
    config.model.conditional = True
  if "shapes" in variants:
    config.data.name = "shapes"
    config.data.image_size = 32
    config.likelihood.name = "logistic"
    config.eval.num_importance = 100
  if "tiny" in variants:
    config.model.latent_dim = 4
    config.model.encoder_width = 2
    config.model.decoder_width = 2
    config.train.batch_size = 16
    config.train.num_steps = 20
    config.train.log_every = 5
    config.train.sample_every = 10
    config.train.num_samples = 16
    config.eval.elbo_every = 10
    config.eval.elbo_num_examples = 16
    config.eval.num_importance = 4
    config.eval.importance_chunk = 2
    config.eval.likelihood_batch_size = 8
    config.eval.at_end = False
    config.eval.num_samples = 64
    config.eval.batch_size = 32
    config.checkpoint.every = 10
    if "beta" in variants:
      config.loss.kl_warmup_steps = 10
  config.lock()
  return config
