"""The experiment's human-facing outputs: CSV, learning curve, summary."""
import csv
import io
from pathlib import Path

from .cost import labeled_cost
from .state import atomic_write_text

METRICS_FILE = 'al_metrics.csv'
CURVE_FILE = 'al_curve.png'
_PRIMARY_HINTS = ('mAP', 'PCKh', 'PCK', 'AP', 'acc')


def primary_metric(metrics: dict) -> str | None:
    """The metric to plot: mAP for detection, PCKh for pose, else the first."""
    for hint in _PRIMARY_HINTS:
        for key in metrics:
            if key.split('/')[-1] == hint:
                return key
    for hint in _PRIMARY_HINTS:
        for key in metrics:
            if hint in key:
                return key
    return next(iter(metrics), None)


def evaluated_cycles(cycles: list[dict]) -> list[dict]:
    return [c for c in cycles if c.get('metrics')]


def ranking_columns(cycle: dict) -> dict[str, float]:
    """A cycle's ranking accuracies as ``ranking_accuracy/<scorer>`` columns."""
    return {f'ranking_accuracy/{k}': v for k, v in (cycle.get('ranking_accuracy') or {}).items()
            if k != 'num_samples'}


def stop_columns(cycle: dict) -> dict:
    """A cycle's stopping signal (:mod:`.stopping`): agreement with the last model, stop
    here, the stop set's mean predicted loss and its change."""
    columns = {}
    if cycle.get('stop_agreement') is not None:
        columns.update(stop_agreement=cycle['stop_agreement'], stop_here=int(cycle['stop_here']))
    for key in ('stop_pred_loss', 'stop_pred_loss_change'):
        if cycle.get(key) is not None:
            columns[key] = cycle[key]
    return columns


def write_reports(work_dir: Path, cycles: list[dict], strategy: str,
                  unit: str = 'images') -> None:
    """``al_metrics.csv`` and ``al_curve.png`` of the cycles so far (``unit``: the
    curve's x axis, the budget's unit)."""
    write_metrics_csv(work_dir, cycles, strategy)
    write_curve(work_dir, cycles, strategy, unit)


def cost_columns(cycle: dict) -> dict:
    """A cycle's labeled set in boxes and seconds (:mod:`.cost`), when recorded."""
    return {f'labeled_{unit}': value for unit, value in (cycle.get('cost') or {}).items()
            if unit != 'images'}


def write_metrics_csv(work_dir: Path, cycles: list[dict], strategy: str) -> Path:
    """One row per evaluated cycle: every metric, the ranking accuracies, the time split."""
    rows = evaluated_cycles(cycles)
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in [*cost_columns(row), *row['metrics'], *ranking_columns(row),
                                *stop_columns(row)] if k not in keys)
    times = ['train_s', 'eval_s', 'score_s', 'ranking_eval_s', 'stop_signal_s']
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['cycle', 'num_labeled', 'strategy', *keys, *times])
    for row in rows:
        values = {**cost_columns(row), **row['metrics'], **ranking_columns(row),
                  **stop_columns(row)}
        writer.writerow([row['cycle'], row['num_labeled'], strategy,
                         *(values.get(k, '') for k in keys),
                         *(row['timings'].get(k, '') for k in times)])
    path = work_dir / METRICS_FILE
    atomic_write_text(path, buf.getvalue())
    return path


def write_curve(work_dir: Path, cycles: list[dict], strategy: str,
                unit: str = 'images') -> Path | None:
    """Plot the primary metric against the labeled set's cost in ``unit``."""
    rows = evaluated_cycles(cycles)
    if not rows:
        return None
    if any(labeled_cost(r, unit) is None for r in rows):
        unit = 'images'  # a record from before costs were counted
    x = {r['cycle']: labeled_cost(r, unit) for r in rows}
    xlabel = 'labeled samples' if unit == 'images' else f'labeled set, {unit}'
    key = primary_metric(rows[0]['metrics'])
    if key is None:
        return None
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    fig, (ax, rank_ax) = plt.subplots(1, 2, figsize=(10, 3.5), dpi=120)
    ax.plot([x[r['cycle']] for r in rows], [r['metrics'].get(key) for r in rows],
            marker='o', label=strategy)
    stops = [x[r['cycle']] for r in rows if r.get('stop_here')]
    if stops:  # the first cycle whose model the stopping signal calls stable
        ax.axvline(stops[0], color='grey', linestyle='--', linewidth=0.8,
                   label='stop here (stable predictions)')
    ax.set_xlabel(xlabel)
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend()
    # The paper's Fig. 5: how well each score ranks the candidates' true losses.
    ranked = [r for r in rows if ranking_columns(r)]
    for name in dict.fromkeys(k for r in ranked for k in ranking_columns(r)):
        label = name.split('/', 1)[1]
        rank_ax.plot([x[r['cycle']] for r in ranked],
                     [ranking_columns(r).get(name, float('nan')) for r in ranked], marker='o',
                     label=f'{strategy} (selection)' if label == 'strategy' else label)
    rank_ax.axhline(0.5, color='grey', linewidth=0.8)
    rank_ax.set_xlabel(f'{xlabel} (model that scored)')
    rank_ax.set_ylabel('ranking accuracy vs true loss')
    rank_ax.grid(alpha=0.3)
    if ranked:
        rank_ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, work_dir / CURVE_FILE)


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure atomically (temporary file, rename) and close it."""
    from matplotlib import pyplot as plt
    tmp = path.with_name(f'.{path.name}.tmp.png')
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def summary_table(cycles: list[dict], strategy: str, unit: str = 'images') -> str:
    """A plain-text table of the evaluated cycles (``unit``: a cost column besides the
    labeled count, when not images)."""
    rows = evaluated_cycles(cycles)
    if not rows:
        return '(no evaluated cycle)'
    shown = [] if unit == 'images' else [unit]
    # The plotted metric first (MpiiPCKAccuracy lists per-joint PCKh before `PCK`).
    primary = primary_metric(rows[0]['metrics'])
    keys = [primary, *(k for k in rows[0]['metrics'] if k != primary)][:4]
    header = ['cycle', 'labeled', *shown, 'strategy', *keys, 'rank acc', 'agreement',
              'train s', 'eval s', 'score s']
    body = [[str(r['cycle']), str(r['num_labeled']),
             *(f'{labeled_cost(r, u) or 0:g}' for u in shown), strategy,
             *(f'{r["metrics"].get(k, float("nan")):.4f}' for k in keys),
             _ranking_cell(r), _stop_cell(r),
             *(f'{r["timings"].get(t, 0):.0f}' for t in ('train_s', 'eval_s', 'score_s'))]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    line = '+'.join('-' * (w + 2) for w in widths)
    fmt = ' | '.join(f'{{:>{w}}}' for w in widths)
    return '\n'.join([fmt.format(*header), line, *(fmt.format(*row) for row in body)])


def _ranking_cell(cycle: dict) -> str:
    value = (cycle.get('ranking_accuracy') or {}).get('strategy')
    return '-' if value is None else f'{value:.3f}'


def _stop_cell(cycle: dict) -> str:
    value = cycle.get('stop_agreement')
    if value is None:
        return '-'
    return f'{value:.3f}' + (' stop' if cycle.get('stop_here') else '')
