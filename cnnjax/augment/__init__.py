"""cnnjax.augment: differentiable data augmentation for GAN training."""
