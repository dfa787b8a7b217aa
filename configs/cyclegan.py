"""CycleGAN (Zhu et al. 2017): unpaired image-to-image translation with two ResNet
generators, two PatchGANs, least-squares GAN losses, cycle and identity losses and a
history pool of fakes for each discriminator.

  python run.py --config=configs/cyclegan.py --workdir=workdirs/cyclegan_shapes

Variants (`--config=configs/cyclegan.py:VARIANT`):
  shapes   (the default) `shape_domains`: outlines (A) <-> filled shapes (B), 32 px,
           unpaired; sized for a CPU budget (narrow generators, 4 residual blocks).
  tiny     `shape_domains/*_tiny` at 16 px, few channels: for tests.
Any two prepared TFDS datasets with image features work: set data.domain_a and
data.domain_b (name, feature, split, test_split).
"""

import ml_collections


def _domain(name: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      name=name,                 # A prepared TFDS dataset (project datasets prepare here).
      feature="image",           # Its image feature holding the domain's images.
      split="train",             # Trained on.
      test_split="test",         # Metrics, grids and `run.py translate --split`.
  ))


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """Returns the locked CycleGAN config for `variant`."""
  config = ml_collections.ConfigDict()
  config.experiment = "cyclegan"
  config.seed = 0

  config.data = ml_collections.ConfigDict(dict(
      domain_a=_domain("shape_domains/outline"),
      domain_b=_domain("shape_domains/filled"),
      data_dir="",               # "" means TFDS's default (or $TFDS_DATA_DIR).
      image_size=32,             # Power of two >= 8; images are padded or resized to it.
      resize="resize",           # "pad" or "resize" (bilinear).
      jitter=True,               # Resize to load_size, random crop back (each image).
      load_size=36,              # (CycleGAN: 286 for 256.)
      flip=True,                 # Random left-right mirror.
      num_threads=2,
      prefetch=4,
  ))

  config.model = ml_collections.ConfigDict(dict(
      g_width=16,                # ResNet generators: channels of the stem (64 in the paper).
      g_num_blocks=4,            # Residual blocks at 1/4 resolution (9 at 256 px, 6 at 128).
      d_width=32,                # PatchGAN channels of the first layer (64).
      d_max_width=128,           # (512)
      d_num_layers=2,            # Stride-2 layers: 3 = 70x70 patches, 2 = 34x34.
      pool_size=50,              # History pool of fakes per discriminator (0: none).
  ))

  config.loss = ml_collections.ConfigDict(dict(
      gan="lsgan",               # "lsgan" (least squares, CycleGAN's) or "vanilla".
      lambda_a=10.0,             # Cycle loss weight of A -> B -> A.
      lambda_b=10.0,             # Cycle loss weight of B -> A -> B.
      lambda_identity=0.5,       # Identity loss, in units of lambda_a / lambda_b (0: off).
  ))

  config.optim = ml_collections.ConfigDict(dict(
      lr=2e-4, b1=0.5, b2=0.999,  # Adam, for every network.
      constant_steps=600,        # Constant rate for these steps (n_epochs),
      decay_steps=600,           # then linear to 0 over these (n_epochs_decay).
  ))

  config.train = ml_collections.ConfigDict(dict(
      batch_size=8,              # Global batch of each domain over every device.
      num_steps=1200,
      log_every=50,
      sample_every=200,          # Grids A | G(A) | F(G(A)) and B | F(B) | G(F(B)).
      on_nonfinite="stop",
  ))

  config.eval = ml_collections.ConfigDict(dict(
      every=0,                   # Test-split metrics every N steps (0: only at the end).
      at_end=True,               # Score the test split into eval.json when training ends.
      num_examples=0,            # Test images of each domain scored (0: the whole split).
      extractor_workdir="",      # Classifier on domain B: FID, KID, task score of G(A).
      extractor_workdir_a="",    # Classifier on domain A: the same scores of F(B) (_b_to_a).
      batch_size=64,             # Images per translation call.
      num_grid=8,                # Test images of each domain in the grids.
  ))

  config.checkpoint = ml_collections.ConfigDict(dict(
      every=400, keep=2, best_metric="", best_mode="min", async_save=True))

  if variant in (None, "", "shapes"):
    pass
  elif variant == "tiny":
    config.data.domain_a.name = "shape_domains/outline_tiny"
    config.data.domain_b.name = "shape_domains/filled_tiny"
    config.data.image_size = 16
    config.data.load_size = 18
    config.model.update(g_width=4, g_num_blocks=1, d_width=4, d_max_width=8,
                        d_num_layers=1, pool_size=4)
    config.train.update(batch_size=8, num_steps=4, log_every=2, sample_every=4)
    config.optim.update(constant_steps=2, decay_steps=2)
    config.eval.update(batch_size=8, num_examples=16, num_grid=4)
    config.checkpoint.update(every=2, async_save=False)
  else:
    raise ValueError(f"Unknown cyclegan variant {variant!r}: use shapes or tiny.")
  config.lock()
  return config
