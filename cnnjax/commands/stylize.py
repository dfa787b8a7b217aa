"""`run.py stylize`: neural style transfer of content images into --out, by
optimisation (Gatys et al.: --style, no --workdir) or by a trained fast-style network
(Johnson et al.: --workdir of a configs/fast_style.py run, whose style it applies)."""

import importlib.util
import os

from absl import flags

from cnnjax.commands import common

NAME = "stylize"
USAGE = """\
  stylize Stylise content images with a style image (Gatys et al.: pixels optimised
          by L-BFGS or Adam against a feature network's Gram matrices) into --out
          (stylized_<name>.png, grid.png: content | style | result, losses.png,
          stylize.json: final content and style losses, curves, seconds per image):
            python run.py stylize --content=A.png[,B.jpg] --style=S.png --out=DIR
              [--config=configs/style_transfer.py[:tiny]] [--config.FIELD=VALUE]
              [--size=128]
          Images are files or scikit-image's photographs (skimage:astronaut,
          skimage:coffee, skimage:chelsea, ...); features are random-weight
          (the default, no download) or VGG19 (--config.features.network=vgg19
          --config.features.weights_path=vgg19-dcbb9e9d.pth).
            python run.py stylize --workdir=FAST_RUN --content=A.png --out=DIR
              [--size=256] [--step=N]
          applies a trained fast-style network (configs/fast_style.py) in one
          forward pass: the same files, stylize.json holding the losses of the
          result and the seconds per image of the forward pass."""

CONTENT = flags.DEFINE_list("content", None, "stylize: comma-separated content images "
                            "(PNG/JPEG files or skimage:NAME).")
STYLE = flags.DEFINE_string("style", None, "stylize: the style image (a PNG/JPEG file "
                            "or skimage:NAME).")
SIZE = flags.DEFINE_integer("size", None, "stylize: image height and width in pixels "
                            "(default: the config's image_size, or the fast-style run's "
                            "data.image_size).", lower_bound=8)

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs", "style_transfer.py")


def _default_config():
  """configs/style_transfer.py's default variant (when --config is not given)."""
  spec = importlib.util.spec_from_file_location("configs_style_transfer", DEFAULT_CONFIG)
  if spec is None or not os.path.isfile(DEFAULT_CONFIG):
    common.fail(f"{DEFAULT_CONFIG} is missing: pass --config=configs/style_transfer.py.")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("")


def _config():
  if common.CONFIG.value is None:
    return _default_config()
  config = common.loaded_config()
  if config.get("experiment") != "style_transfer":
    common.fail(f"--config is a {config.get('experiment', 'gan')} config: stylize needs "
                "a style transfer config, e.g. --config=configs/style_transfer.py.")
  return config


def _feed_forward(contents: list[str], out_dir: str) -> None:
  """`stylize --workdir=FAST_RUN`: the run's network, its own style."""
  if STYLE.value:
    common.fail("stylize --workdir applies the style the run was trained on: drop "
                "--style (or drop --workdir to optimise pixels for another style).")
  for name in ("config", "seed"):
    if flags.FLAGS[name].present:
      common.fail(f"stylize --workdir reads the run's own config: drop --{name}.")
  from cnnjax.style.fast_stylize import run_fast_stylize  # Imports jax.
  run_fast_stylize(common.WORKDIR.value, content_specs=contents, out_dir=out_dir,
                   size=SIZE.value, step=common.STEP.value)


def main() -> None:
  contents = [spec.strip() for spec in CONTENT.value or [] if spec.strip()]
  if not contents:
    common.fail("--content is required for stylize: comma-separated content images "
                "(files or skimage:NAME).")
  out, out_dir = common.OUT.value, common.OUT_DIR.value
  if out and out_dir and os.path.abspath(out) != os.path.abspath(out_dir):
    common.fail(f"--out={out} and --out_dir={out_dir} differ: pass one output directory.")
  if not (out or out_dir):
    common.fail("--out is required for stylize: the directory of the results.")
  if common.WORKDIR.value is not None:
    _feed_forward(contents, out or out_dir)
    return
  if common.STEP.value is not None:
    common.fail("--step needs --workdir (a fast-style run); optimisation reads no run.")
  if not STYLE.value:
    common.fail("--style is required for stylize: the style image (a file or "
                "skimage:NAME), or pass --workdir of a trained fast-style run.")
  config = _config()
  if SIZE.value is not None:
    config.image_size = SIZE.value
  if flags.FLAGS["seed"].present:
    config.seed = common.SEED.value
  from cnnjax.style.stylize_run import run_stylize  # Imports jax.
  run_stylize(config, content_specs=contents, style_spec=STYLE.value,
              out_dir=out or out_dir)
