"""`run.py edit`: interpolation, traversals, truncation, class interpolation and
inpainting with a GAN or VAE run, as PNG grids and `edit.json` in --out_dir."""

import math

from absl import flags

from cnnjax.commands import common, projector_flags

NAME = "edit"
USAGE = """\
  edit    Edit with a GAN or VAE run into --out_dir (PNG grids and edit.json; the run's
          own files are never written):
            python run.py edit --workdir=RUN --operation=interpolate --out_dir=DIR
              [--interpolation=slerp|linear] [--num_anchors=2] [--path_steps=8]
            python run.py edit --workdir=RUN --operation=traverse --out_dir=DIR
              [--coordinates=0,1,2,3 | --direction_file=D.npy] [--span=3]
            python run.py edit --workdir=GAN_RUN --operation=truncate --out_dir=DIR
              [--psi=1,0.8,0.6,0.4,0.2,0] [--truncation_thresholds=2,1,0.5]
            python run.py edit --workdir=COND_RUN --operation=class_interpolate
              --out_dir=DIR [--path_classes=3,8] [--extractor_workdir=CLASSIFIER]
            python run.py edit --workdir=RUN --operation=inpaint --out_dir=DIR
              [--mask=square|pixels|box|file] [--mask_size=N] [--mask_file=M.png]
              [--inpaint_method=iterate|optimize|invert] [--images=A.png,B.png]
          A VAE encodes real images (--split, default test, or --images); a GAN
          inpaints by masked inversion (the projector flags; --extractor_workdir for
          its perceptual term, or --feature_weight=0)."""

OPERATION = flags.DEFINE_enum(
    "operation", None, ["interpolate", "traverse", "truncate", "class_interpolate",
                        "inpaint"], "edit: the operation.")
INTERPOLATION = flags.DEFINE_enum("interpolation", "slerp", ["linear", "slerp"],
                                  "edit: linear or spherical interpolation.")
NUM_ANCHORS = flags.DEFINE_integer("num_anchors", 2, "edit: latents each interpolation "
                                   "row passes through (>= 2).")
PATH_STEPS = flags.DEFINE_integer("path_steps", 8, "edit: images per interpolation "
                                  "segment, traversal or class path (>= 2).")
EDIT_ROWS = flags.DEFINE_integer("edit_rows", 8, "edit: grid rows (latents or real "
                                 "images; with --images, one per file).")
COORDINATES = flags.DEFINE_list("coordinates", ["0", "1", "2", "3"], "edit: latent "
                                "coordinates to traverse, one grid row each.")
DIRECTION_FILE = flags.DEFINE_string("direction_file", None, "edit: a .npy latent "
                                     "direction (Z,) to traverse instead of coordinates.")
SPAN = flags.DEFINE_float("span", 3.0, "edit: a traversal goes from -span to +span.")
PSI = flags.DEFINE_string("psi", "1,0.8,0.6,0.4,0.2,0", "edit: truncation psi values "
                          "in [0, 1], one grid column each.")
TRUNCATION_THRESHOLDS = flags.DEFINE_string(
    "truncation_thresholds", "2,1,0.5", "edit: BigGAN resampling thresholds (> 0), one "
    "column each; empty for none.")
PATH_CLASSES = flags.DEFINE_string("path_classes", None, "edit: classes a class "
                                   "interpolation passes through (default: row r goes "
                                   "from class r to r + 1).")
MASK = flags.DEFINE_enum("mask", "square", ["square", "pixels", "box", "file"],
                         "edit: the inpainting mask.")
MASK_FILE = flags.DEFINE_string("mask_file", None, "edit: a PNG mask of the images' "
                                "size, white = missing (--mask=file).")
MASK_SIZE = flags.DEFINE_integer("mask_size", None, "edit: side of the square or box "
                                 "mask (default: half the image side).")
MASK_TOP = flags.DEFINE_integer("mask_top", None, "edit: top row of the square mask "
                                "(default: centred).")
MASK_LEFT = flags.DEFINE_integer("mask_left", None, "edit: left column of the square "
                                 "mask (default: centred).")
MASK_FRACTION = flags.DEFINE_float("mask_fraction", 0.5, "edit: fraction of missing "
                                   "pixels of --mask=pixels, in (0, 1).")
INPAINT_METHOD = flags.DEFINE_enum(
    "inpaint_method", None, ["iterate", "optimize", "invert"], "edit: VAE iterate "
    "(clamped encode/decode) or optimize (Adam on z); GAN invert. Default: all of the "
    "run's kind.")
INPAINT_STEPS = flags.DEFINE_integer("inpaint_steps", 20, "edit: rounds of iterated "
                                     "encode/decode.")
LATENT_STEPS = flags.DEFINE_integer("latent_steps", 200, "edit: Adam steps of latent "
                                    "optimisation (VAE inpainting).")
LATENT_LR = flags.DEFINE_float("latent_lr", 0.05, "edit: Adam learning rate of latent "
                               "optimisation.")
PIXEL_SIGMA = flags.DEFINE_float("pixel_sigma", 0.1, "edit: latent optimisation's "
                                 "pixel noise std (on [-1, 1]): the reconstruction "
                                 "term's weight against the prior.")


def _numbers(flag, minimum: float, *, inclusive: bool = True, maximum=None,
             allow_empty: bool = False) -> list[float]:
  text = flag.value.strip()
  if not text and allow_empty:
    return []
  try:
    values = [float(part) for part in text.split(",")]
  except ValueError:
    values = []
  ok = values and all(math.isfinite(v) and (v >= minimum if inclusive else v > minimum)
                      and (maximum is None or v <= maximum) for v in values)
  if not ok:
    bound = f"{'>=' if inclusive else '>'} {minimum}" + (
        f" and <= {maximum}" if maximum is not None else "")
    common.fail(f"--{flag.name}={flag.value!r} must be comma-separated numbers "
                f"{bound}.")
  return values


def _integers(flag, name: str) -> list[int] | None:
  if flag.value is None:
    return None
  parts = flag.value if isinstance(flag.value, list) else flag.value.split(",")
  if not parts or not all(part.strip().isdigit() for part in parts):
    common.fail(f"--{flag.name} must be comma-separated {name} (integers >= 0), got "
                f"{flag.value!r}.")
  return [int(part) for part in parts]


def _check_counts() -> None:
  for flag, minimum in ((NUM_ANCHORS, 2), (PATH_STEPS, 2), (EDIT_ROWS, 1),
                        (INPAINT_STEPS, 1), (LATENT_STEPS, 1), (MASK_SIZE, 1),
                        (MASK_TOP, 0), (MASK_LEFT, 0)):
    if flag.value is not None and flag.value < minimum:
      common.fail(f"--{flag.name} must be at least {minimum}, got {flag.value}.")
  for flag in (SPAN, LATENT_LR, PIXEL_SIGMA):
    if not (math.isfinite(flag.value) and flag.value > 0):
      common.fail(f"--{flag.name} must be positive, got {flag.value}.")
  if not 0 < MASK_FRACTION.value < 1:
    common.fail(f"--mask_fraction must be in (0, 1), got {MASK_FRACTION.value}.")


def main() -> None:
  _check_counts()
  psis = _numbers(PSI, 0.0, maximum=1.0)
  thresholds = _numbers(TRUNCATION_THRESHOLDS, 0.0, inclusive=False, allow_empty=True)
  coordinates = _integers(COORDINATES, "latent coordinates")
  classes = _integers(PATH_CLASSES, "classes")
  if classes is not None and len(classes) < 2:
    common.fail(f"--path_classes needs at least two classes, got {PATH_CLASSES.value!r}.")
  projector = projector_flags.projector_settings()
  workdir = common.required_workdir()
  if OPERATION.value is None:
    common.fail("--operation is required: interpolate, traverse, truncate, "
                "class_interpolate or inpaint.")
  if common.OUT_DIR.value is None:
    common.fail("--out_dir is required for edit: the directory of the grids and "
                "edit.json.")
  from cnnjax.editing import inpaint_runs, inpainting, inversion  # Imports jax.
  from cnnjax.editing.edit_command import EditOptions, run_edit
  options = EditOptions(
      interpolation=INTERPOLATION.value, num_anchors=NUM_ANCHORS.value,
      path_steps=PATH_STEPS.value, rows=EDIT_ROWS.value, coordinates=coordinates,
      direction_file=DIRECTION_FILE.value, span=SPAN.value, psis=psis,
      thresholds=thresholds, classes=classes,
      mask=inpaint_runs.MaskSpec(kind=MASK.value, size=MASK_SIZE.value,
                                 top=MASK_TOP.value, left=MASK_LEFT.value,
                                 fraction=MASK_FRACTION.value),
      mask_file=MASK_FILE.value, inpaint_method=INPAINT_METHOD.value,
      inpaint_steps=INPAINT_STEPS.value,
      optimisation=inpainting.LatentOptimisation(
          num_steps=LATENT_STEPS.value, learning_rate=LATENT_LR.value,
          sigma=PIXEL_SIGMA.value),
      projector=inversion.ProjectorSettings(**projector))
  run_edit(workdir, out_dir=common.OUT_DIR.value, operation=OPERATION.value,
           options=options, image_paths=common.IMAGES.value,
           split=common.SPLIT.value or "test",
           extractor_workdir=common.EXTRACTOR_WORKDIR.value, seed=common.SEED.value,
           step=common.STEP.value)
