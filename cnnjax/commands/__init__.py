"""run.py's commands: one module each, listed in `COMMANDS`.

A command module defines its absl flags at module level (importing only absl,
ml_collections and `cnnjax.commands.common`, so that flag errors come before JAX is
imported), `NAME`, `USAGE` (its paragraph of `python run.py --help`) and `main()`, which
does the work and raises `cnnjax.errors.CnnjaxError` for bad input. Adding a command is
one module and one entry below. Flags used by several commands (--config, --workdir,
--seed, --step, --out) live in `cnnjax.commands.common`.
"""

from cnnjax.commands import (attributes, edit, evaluate, human_eval, invert, likelihood,
                             report, sample, stylize, sweep, train, translate)

COMMANDS = {module.NAME: module for module in (
    train, sample, evaluate, likelihood, sweep, report, translate, attributes, edit,
    invert, human_eval, stylize)}
