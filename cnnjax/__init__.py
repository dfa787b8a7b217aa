"""cnnjax: convolutional image generation and editing in JAX/Flax."""

__version__ = "0.1.0"
