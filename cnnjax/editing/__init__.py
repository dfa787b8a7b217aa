"""Editing of finished runs: interpolation, inversion, inpainting, attribute arithmetic."""
