"""The feature network of style transfer, chosen by the config's `features` section.

  network="random"  `cnnjax.models.random_features.RandomFeatures`, weights drawn from
                    jax.random.fold_in(PRNGKey(config.seed), WEIGHTS_STREAM): no file.
  network="vgg19"   `cnnjax.models.vgg19.VGG19Features` with torchvision's ImageNet
                    weights from `features.weights_path` (`cnnjax.models.vgg19_weights`).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from cnnjax.errors import ConfigError
from cnnjax.models import random_features, vgg19, vgg19_weights

NETWORKS = ("random", "vgg19")
NORMALIZATIONS = ("content", "none")
WEIGHTS_STREAM = 0   # fold_in stream of the random network's weights.


@dataclasses.dataclass(frozen=True)
class FeatureNetwork:
  """A feature extractor: `module.apply(variables, images)` -> {layer: activations}."""
  module: nn.Module
  variables: Any


def layer_names(network: str) -> tuple[str, ...]:
  """Names of the layers `network` can return."""
  return vgg19.LAYERS if network == "vgg19" else random_features.layer_names()


def requested_layers(features: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The content layer and the style layers, each once, in network order."""
  names = layer_names(features.network)
  wanted = {features.content_layer, *features.style_layers}
  return tuple(name for name in names if name in wanted)


def check_config(config: ml_collections.ConfigDict, image_size: int | None = None) -> None:
  """Raises `ConfigError` for a network, layer, weight or size the run cannot use.

  Args:
    config: a style config (sections `features` and `loss`).
    image_size: the smallest image side the network will see (default: the config's
      `image_size`).
  """
  features = config.features
  image_size = config.image_size if image_size is None else image_size
  if features.network not in NETWORKS:
    raise ConfigError(f"Unknown features.network {features.network!r}: use one of "
                      f"{', '.join(NETWORKS)}.")
  if features.normalize not in NORMALIZATIONS:
    raise ConfigError(f"Unknown features.normalize {features.normalize!r}: use one of "
                      f"{', '.join(NORMALIZATIONS)}.")
  names = layer_names(features.network)
  style_layers = tuple(features.style_layers)
  for layer in (features.content_layer, *style_layers):
    if layer not in names:
      raise ConfigError(f"features: {features.network} has no layer {layer!r}; use names "
                        f"such as relu1_1, relu2_1, relu3_1, relu4_1, relu4_2, relu5_1.")
  if not style_layers or len(set(style_layers)) != len(style_layers):
    raise ConfigError(f"features.style_layers={style_layers} must name at least one "
                      "layer, each once.")
  weights = tuple(features.style_layer_weights)
  if len(weights) != len(style_layers):
    raise ConfigError(f"features.style_layer_weights has {len(weights)} values but "
                      f"features.style_layers {len(style_layers)}: give one per layer.")
  for name, value in [("style_layer_weights", w) for w in weights] + [
      (f"loss.{key}", config.loss[key]) for key in ("content_weight", "style_weight",
                                                     "tv_weight")]:
    if not value >= 0:
      raise ConfigError(f"{name} must be >= 0, got {value}.")
  factor = max(_downsampling(features.network, layer)
               for layer in requested_layers(features))
  if image_size < max(factor, 8):
    raise ConfigError(f"image_size={image_size} is too small: layer(s) of "
                      f"{features.network} down to {requested_layers(features)[-1]} need "
                      f"at least {max(factor, 8)} pixels.")
  if features.network != "vgg19":
    for field in ("weights_path", "converted_path"):
      if features[field]:
        raise ConfigError(f"features.{field}={features[field]!r} is set but "
                          f"features.network={features.network!r} reads no weights: set "
                          f"features.network=vgg19 to use it, or leave features.{field} "
                          "empty.")
  if features.network == "vgg19" and not features.weights_path:
    raise ConfigError("features.network='vgg19' needs features.weights_path: put "
                      f"torchvision's {vgg19_weights.VGG19_FILENAME} somewhere local and "
                      "pass --config.features.weights_path=PATH (or use "
                      "features.network='random').")


def _downsampling(network: str, layer: str) -> int:
  names = list(layer_names(network))
  pools = sum(1 for name in names[:names.index(layer) + 1] if name.startswith("pool"))
  return 2 ** pools


def build_feature_network(config: ml_collections.ConfigDict,
                          image_size: int | None = None) -> FeatureNetwork:
  """The network and its variables (numpy / device arrays) for `config`.

  `image_size` is the smallest image side it will see (see `check_config`).

  Raises:
    ConfigError: see `check_config`.
    CheckpointError: a missing or malformed VGG19 weight file (one line).
  """
  check_config(config, image_size)
  features = config.features
  layers = requested_layers(features)
  if features.network == "vgg19":
    module = vgg19.VGG19Features(layers=layers)
    variables = vgg19_weights.load_vgg19_params(
        features.weights_path, features.converted_path or None)
    needed = {name for name in vgg19.CONVOLUTIONS
              if vgg19.LAYERS.index(name) <= vgg19.LAYERS.index(layers[-1])}
    variables = {"params": {name: value for name, value in variables["params"].items()
                            if name in needed}}
    return FeatureNetwork(module, variables)
  module = random_features.RandomFeatures(layers=layers)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), WEIGHTS_STREAM)
  return FeatureNetwork(module, random_features.random_params(module, key))
