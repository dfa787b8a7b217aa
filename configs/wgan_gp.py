"""WGAN-GP (Gulrajani et al. 2017): the Wasserstein critic with a gradient penalty.

The DCGAN backbone with LayerNorm in the critic in place of BatchNorm (the penalty needs
every example's own input gradient), lambda = 10, five critic updates per generator
update and Adam(1e-4, 0, 0.9), as in the paper. `train.batch_size` is the real images of
one generator step: each critic update sees a fifth of them (64), as the paper's batch.
The critic is half DCGAN's width: double back-propagation through it is what costs most
on a CPU.

Variants (`--config=configs/wgan_gp.py:VARIANT`):
  (none)   unconditional WGAN-GP on `digits` at 28x28.
  tiny     a few-channel model for tests (two critic updates per step).
"""

import ml_collections

from configs import dcgan


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked experiment config for `variant`: configs/dcgan.py's fields, with
  the values below."""
  config = dcgan.get_config()
  config.loss.name = "wasserstein"
  config.loss.gp_weight = 10.0
  config.model.d_norm = "layer"  # The penalty is per example: no BatchNorm in the critic.
  config.model.d_width = 32
  config.optim.g_lr = 1e-4
  config.optim.d_lr = 1e-4
  config.optim.b1 = 0.0
  config.optim.b2 = 0.9
  config.train.d_steps = 5
  config.train.batch_size = 320  # Real images per G step: 64 per critic update.
  config.train.num_steps = 1500
  if variant in (None, ""):
    pass
  elif variant == "tiny":
    dcgan.make_tiny(config)
    config.train.batch_size = 32
    config.train.d_steps = 2
  else:
    raise ValueError(f"Unknown variant {variant!r} of configs/wgan_gp.py; "
                     "use one of '', 'tiny'.")
  return config
