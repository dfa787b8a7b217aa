"""Editing finished runs: latent interpolation, inversion, inpainting, attribute arithmetic."""
