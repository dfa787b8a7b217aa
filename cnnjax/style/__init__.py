"""Neural style transfer: Gatys et al.'s optimisation of pixels against the Gram matrices
of a feature network (random-weight or VGG19), for `run.py stylize`."""
