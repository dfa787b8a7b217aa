"""Reproducible sweeps and ablation studies: specs, launchers, provenance, reports.

A sweep file (experiments/NAME.py) defines `get_sweep()` returning a `Sweep`; see
`cnnjax.sweeps.spec`. `python run.py sweep` launches it (`cnnjax.sweeps.launch`,
`cnnjax.sweeps.slurm`, `cnnjax.sweeps.vmap_seeds`) and `python run.py report` turns it
into tables and plots (`cnnjax.sweeps.report`).
"""

from cnnjax.sweeps.spec import Axis, Run, Sweep, SweepPlan, product, zipped

__all__ = ["Axis", "Run", "Sweep", "SweepPlan", "product", "zipped"]
