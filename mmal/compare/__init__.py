"""Compare strategies over seeds: runs, statistics and reports (tools/al_compare.py)."""
from .report import Run, collect_runs, compare, write_all
from .runs import RunSpec, parse_strategy, plan_runs, run_one

__all__ = ['Run', 'RunSpec', 'collect_runs', 'compare', 'parse_strategy', 'plan_runs',
           'run_one', 'write_all']
