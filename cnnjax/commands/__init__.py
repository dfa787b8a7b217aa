"""run.py's commands: one module each, listed in `COMMANDS`.

A command module defines its absl flags at module level (importing only absl,
ml_collections and `cnnjax.commands.common`, so that flag errors come before JAX is
imported), `NAME`, `USAGE` (its paragraph of `python run.py --help`) and `main()`, which
does the work and raises `cnnjax.errors.CnnjaxError` for bad input. Adding a command is
one module and one entry below. Flags used by several commands (--config, --workdir,
--seed, --step, --out) live in `cnnjax.commands.common`.

`MULTI_PROCESS = True` marks the commands that run as one program over several
processes (`cnnjax.train.distributed`; tested with real processes). run.py refuses the
others, with a one-line error, when the flags or the environment (a SLURM step of
several tasks, a TPU pod slice) ask for several processes.
"""

from cnnjax.commands import (attributes, edit, evaluate, human_eval, invert, likelihood,
                             report, sample, stylize, sweep, train, translate)

COMMANDS = {module.NAME: module for module in (
    train, sample, evaluate, likelihood, sweep, report, translate, attributes, edit,
    invert, human_eval, stylize)}
MULTI_PROCESS_COMMANDS = tuple(name for name, module in COMMANDS.items()
                               if getattr(module, "MULTI_PROCESS", False))
