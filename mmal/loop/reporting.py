"""The experiment's human-facing outputs: CSV, learning curve, summary."""
import csv
import io
from pathlib import Path

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


def write_metrics_csv(work_dir: Path, cycles: list[dict], strategy: str) -> Path:
    """One row per evaluated cycle: cycle, num_labeled, strategy, every metric."""
    rows = evaluated_cycles(cycles)
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row['metrics'] if k not in keys)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['cycle', 'num_labeled', 'strategy', *keys])
    for row in rows:
        writer.writerow([row['cycle'], row['num_labeled'], strategy,
                         *(row['metrics'].get(k, '') for k in keys)])
    path = work_dir / METRICS_FILE
    atomic_write_text(path, buf.getvalue())
    return path


def write_curve(work_dir: Path, cycles: list[dict], strategy: str) -> Path | None:
    """Plot the primary metric against the number of labeled samples."""
    rows = evaluated_cycles(cycles)
    if not rows:
        return None
    key = primary_metric(rows[0]['metrics'])
    if key is None:
        return None
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    ax.plot([r['num_labeled'] for r in rows], [r['metrics'].get(key) for r in rows],
            marker='o', label=strategy)
    ax.set_xlabel('labeled samples')
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = work_dir / CURVE_FILE
    tmp = path.with_name(f'.{path.name}.tmp.png')
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def summary_table(cycles: list[dict], strategy: str) -> str:
    """A plain-text table of the evaluated cycles."""
    rows = evaluated_cycles(cycles)
    if not rows:
        return '(no evaluated cycle)'
    # The plotted metric first (MpiiPCKAccuracy lists per-joint PCKh before `PCK`).
    primary = primary_metric(rows[0]['metrics'])
    keys = [primary, *(k for k in rows[0]['metrics'] if k != primary)][:4]
    header = ['cycle', 'labeled', 'strategy', *keys, 'train s']
    body = [[str(r['cycle']), str(r['num_labeled']), strategy,
             *(f'{r["metrics"].get(k, float("nan")):.4f}' for k in keys),
             f'{r["timings"].get("train_s", 0):.0f}'] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    line = '+'.join('-' * (w + 2) for w in widths)
    fmt = ' | '.join(f'{{:>{w}}}' for w in widths)
    return '\n'.join([fmt.format(*header), line, *(fmt.format(*row) for row in body)])
