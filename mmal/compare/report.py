"""Collect finished runs and write the comparison: CSV, JSON, Markdown, PNG.

Runs are read from their ``al_state.json`` only, so a comparison can be
re-rendered at any time (``--plot-only``) and can merge runs made elsewhere.
"""
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..loop.reporting import evaluated_cycles, primary_metric, save_figure
from ..loop.state import STATE_FILE, ExperimentState, atomic_write_text
from . import stats

FILES = dict(csv='compare.csv', json='compare.json', markdown='compare.md', plot='compare.png')


@dataclass
class Run:
    """The evaluated cycles of one (strategy, seed) experiment."""

    name: str
    seed: int
    path: Path
    finished: bool
    cycles: list[dict] = field(default_factory=list)
    #: Why the run stopped without finishing (e.g. a cycle's training
    #: diverged); such a run is listed, never averaged.
    failure: str | None = None


def collect_runs(roots: list[Path]) -> list[Run]:
    """Every ``<root>/<name>/seed<k>/al_state.json`` under the given folders.

    The same (name, seed) found twice is refused: merging must not count a
    run twice. Runs with no evaluated cycle yet are left out, unless they
    failed (then they are listed as such).
    """
    runs: dict[tuple[str, int], Run] = {}
    for root in roots:
        for path in sorted(Path(root).glob(f'*/seed*/{STATE_FILE}')):
            name = path.parent.parent.name
            if name.startswith('_'):
                continue
            data = ExperimentState.load(path.parent).data
            seed = int(data['settings']['seed'])
            key = (name, seed)
            if key in runs:
                raise ValueError(f'two runs of {name} seed {seed}: {runs[key].path} and '
                                 f'{path.parent}; merge each run once')
            cycles = evaluated_cycles(data['cycles'])
            failure = run_failure(data)
            if cycles or failure:
                runs[key] = Run(name, seed, path.parent, data.get('status') == 'finished',
                                cycles, failure)
    return list(runs.values())


def run_failure(data: dict) -> str | None:
    """Why a run's state says it failed, or None."""
    for entry in data['cycles']:
        failure = entry.get('failure')
        if failure:
            what = ', '.join(f'{k} {failure[k]}' for k in ('iteration', 'epoch')
                             if k in failure)
            term = f'; {failure["term"]} = {failure["value"]}' if 'term' in failure else ''
            return f'cycle {entry["cycle"]} {failure.get("kind", "failed")} ({what}{term})'
    return 'failed' if data.get('status') == 'failed' else None


def compare(runs: list[Run], baseline: str = 'RandomStrategy', metric: str | None = None,
            confidence: float = 0.95) -> dict:
    """Per strategy: the mean curve of every metric, AUC, labels needed, paired differences.

    The per-cycle means use every run that reached the cycle (``n`` says
    how many). The summary figures (AUC, final value, labels to reach the
    baseline, paired differences) use the finished runs only (all runs
    while none has finished), over the *horizon*, the cycles every one of
    them has, so strategies and seeds are compared over the same budget even
    while some runs are still going.

    Args:
        runs (list[Run]): The runs; only their evaluated cycles count.
        baseline (str): The strategy the others are compared with (random).
        metric (str, optional): The metric of the summary figures; by
            default the primary one (mAP, PCKh).
        confidence (float): Of the confidence intervals.
    """
    failed = sorted(f'{r.name} seed {r.seed}: {r.failure}' for r in runs if r.failure)
    runs = [r for r in runs if not r.failure]
    if not runs:
        raise ValueError('no run with an evaluated cycle to compare'
                         + (f'; failed: {"; ".join(failed)}' if failed else ''))
    metric = metric or primary_metric(runs[0].cycles[0]['metrics'])
    summarised = [r for r in runs if r.finished] or runs
    horizon = min(len(r.cycles) for r in summarised)
    names = sorted({r.name for r in runs}, key=lambda n: (n != baseline, n))
    result = dict(metric=metric, baseline=baseline if baseline in names else None,
                  confidence=confidence, horizon=horizon,
                  unfinished=sorted(f'{r.name} seed {r.seed}' for r in runs if not r.finished),
                  failed=failed, strategies={})
    for name in names:
        result['strategies'][name] = _strategy_summary(
            [r for r in runs if r.name == name], [r for r in summarised if r.name == name],
            metric, horizon)
    base = result['strategies'].get(baseline)
    if base is None or not base['summary_curve']:
        return result
    end, target = base['summary_curve'][-1]
    result['baseline_final'] = target
    result['seed_warnings'] = _seed_warnings(summarised, baseline)
    result['horizon_labeled'] = end
    for name, summary in result['strategies'].items():
        points = summary['summary_curve']
        needed = stats.labels_to_reach([x for x, _ in points], [y for _, y in points], target) \
            if points else None
        summary['labels_to_reach_baseline'] = needed
        summary['labels_saved'] = None if needed is None else end - needed
        if name != baseline:
            summary['vs_baseline'] = dict(
                auc=_difference(summary['auc']['per_seed'], base['auc']['per_seed'],
                                confidence),
                final=_difference(summary['final_per_seed'], base['final_per_seed'],
                                  confidence))
    return result


def _strategy_summary(group: list[Run], summarised: list[Run], metric: str,
                      horizon: int) -> dict:
    cycles = sorted({c['cycle'] for r in group for c in r.cycles})
    curve, table = [], []
    for c in cycles:
        entries = [(r.seed, e) for r in group for e in r.cycles if e['cycle'] == c]
        labeled = sorted({e['num_labeled'] for _, e in entries})
        if len(labeled) != 1:
            raise ValueError(f'{group[0].name} cycle {c}: runs disagree on the labeled count '
                             f'{labeled}; compare runs of one plan')
        keys = sorted({k for _, e in entries for k in e['metrics']})
        row = dict(cycle=c, num_labeled=labeled[0], metrics={}, ranking_accuracy={})
        for k in keys:
            mean, std, n = stats.mean_std([e['metrics'].get(k) for _, e in entries])
            row['metrics'][k] = dict(mean=mean, std=std, n=n)
        rank_keys = sorted({k for _, e in entries for k in e.get('ranking_accuracy') or {}
                            if k != 'num_samples'})
        for k in rank_keys:
            mean, std, n = stats.mean_std([(e.get('ranking_accuracy') or {}).get(k)
                                           for _, e in entries])
            row['ranking_accuracy'][k] = dict(mean=mean, std=std, n=n)
        table.append(row)
        if metric not in row['metrics']:
            raise ValueError(f'{group[0].name} cycle {c} has no metric {metric!r}; '
                             f'it has {keys}')
        curve.append(dict(num_labeled=labeled[0], **row['metrics'][metric],
                          per_seed={s: e['metrics'].get(metric) for s, e in entries}))
    # The summary: finished runs, first `horizon` cycles.
    auc = stats.finite({r.seed: stats.normalised_auc(
        [e['num_labeled'] for e in r.cycles[:horizon]],
        [e['metrics'].get(metric, float('nan')) for e in r.cycles[:horizon]])
        for r in summarised})
    final = stats.finite({r.seed: r.cycles[horizon - 1]['metrics'].get(metric)
                          for r in summarised})
    summary_curve = [(summarised[0].cycles[i]['num_labeled'],
                      stats.mean_std([r.cycles[i]['metrics'].get(metric) for r in summarised])[0])
                     for i in range(horizon)] if summarised else []
    mean, std, n = stats.mean_std(list(auc.values()))
    return dict(seeds=sorted(r.seed for r in group), cycles=table, curve=curve,
                auc=dict(mean=mean, std=std, n=n, per_seed=auc), final_per_seed=final,
                summary_curve=summary_curve)


def _seed_warnings(summarised: list[Run], baseline: str) -> list[str]:
    """Where the baseline's summary rests on fewer seeds than a strategy's."""
    seeds: dict[str, set[int]] = {}
    for r in summarised:
        seeds.setdefault(r.name, set()).add(r.seed)
    base = seeds.get(baseline, set())
    return [f'{baseline} has {len(base)} seed(s) {sorted(base)} in the summary, {name} '
            f'{len(mine)} {sorted(mine)}: the Δ columns pair the {len(base & mine)} common '
            'seed(s), the labels columns compare means over different seeds'
            for name, mine in sorted(seeds.items()) if name != baseline and len(base) < len(mine)]


def _difference(strategy: dict, baseline: dict, confidence: float) -> dict:
    """Paired per-seed differences, their mean and intervals (none below two seeds)."""
    seeds, diffs = stats.paired_differences(strategy, baseline)
    out = dict(seeds=seeds, per_seed=diffs, mean=None, ci=None, t_ci=None,
               favourable=sum(d > 0 for d in diffs))
    if diffs:
        out['mean'] = float(sum(diffs) / len(diffs))
    if len(diffs) >= 2:
        out['ci'] = list(stats.bootstrap_ci(diffs, confidence))
        out['t_ci'] = list(stats.t_interval(diffs, confidence))
    return out


# ----------------------------------------------------------------- writers
def write_all(result: dict, out_dir: Path) -> dict[str, Path]:
    """Write CSV, JSON, Markdown and PNG into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / name for kind, name in FILES.items()}
    atomic_write_text(paths['csv'], to_csv(result))
    atomic_write_text(paths['json'], json.dumps(result, indent=1, default=_jsonable) + '\n')
    atomic_write_text(paths['markdown'], to_markdown(result))
    write_plot(result, paths['plot'])
    return paths


def _jsonable(value):
    return str(value)


def to_csv(result: dict) -> str:
    """One row per strategy, cycle and metric (ranking accuracy included)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['strategy', 'cycle', 'num_labeled', 'metric', 'mean', 'std', 'n'])
    for name, summary in result['strategies'].items():
        for row in summary['cycles']:
            values = [*row['metrics'].items(),
                      *((f'ranking_accuracy/{k}', v) for k, v in row['ranking_accuracy'].items())]
            for key, v in values:
                writer.writerow([name, row['cycle'], row['num_labeled'], key,
                                 repr(v['mean']), repr(v['std']), v['n']])
    return buf.getvalue()


def to_markdown(result: dict) -> str:
    """The comparison as Markdown tables, ready to quote."""
    metric, base = result['metric'], result.get('baseline')
    pct = int(round(result['confidence'] * 100))
    names = list(result['strategies'])
    labeled = sorted({p['num_labeled'] for s in result['strategies'].values() for p in s['curve']})
    lines = [f'{metric} (mean ± std over seeds) against labeled samples', '',
             '| strategy | seeds | ' + ' | '.join(str(x) for x in labeled)
             + ' | AUC (normalised) |', '|---|---|' + '---|' * (len(labeled) + 1)]
    for name in names:
        s = result['strategies'][name]
        at = {p['num_labeled']: p for p in s['curve']}
        cells = [f'{at[x]["mean"]:.4f} ± {at[x]["std"]:.4f}' if x in at else '–' for x in labeled]
        lines.append(f'| {name} | {len(s["seeds"])} | ' + ' | '.join(cells)
                     + f' | {_pm(s["auc"])} |')
    if base and 'baseline_final' in result:
        end = result['horizon_labeled']
        lines += ['', f'Against {base}, paired by seed, up to {end} labeled samples: mean '
                  f'difference [{pct}% bootstrap CI] (t-interval; seeds better/all). Labels '
                  f'each strategy needs to reach {base}\'s mean at {end} '
                  f'({result["baseline_final"]:.4f}):', '',
                  '| strategy | Δ AUC | Δ at the last cycle | labels to reach | labels saved |',
                  '|---|---|---|---|---|']
        for name in names:
            s = result['strategies'][name]
            vs = s.get('vs_baseline', {})
            needed = s.get('labels_to_reach_baseline')
            saved = s.get('labels_saved')
            lines.append(f'| {name} | {_diff(vs.get("auc"))} | {_diff(vs.get("final"))} | '
                         + ('not reached' if needed is None else f'{needed:.0f}') + ' | '
                         + ('–' if saved is None else f'{saved:+.0f}') + ' |')
    rank = [(n, p) for n in names for p in result['strategies'][n]['cycles']
            if p['ranking_accuracy']]
    if rank:
        lines += ['', 'Ranking accuracy of each strategy\'s own scores against the true '
                  'losses (pairs ordered alike; 0.5 = chance), per cycle:', '',
                  '| strategy | ' + ' | '.join(f'cycle {c}' for c in sorted(
                      {p['cycle'] for _, p in rank})) + ' |',
                  '|---|' + '---|' * len({p['cycle'] for _, p in rank})]
        cycles = sorted({p['cycle'] for _, p in rank})
        for name in names:
            at = {p['cycle']: p['ranking_accuracy'].get('strategy')
                  for p in result['strategies'][name]['cycles']}
            cells = [_pm(at[c]) if at.get(c) else '–' for c in cycles]
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    if result.get('seed_warnings'):
        lines += [''] + [f'Note: {w}.' for w in result['seed_warnings']]
    if result.get('failed'):
        lines += ['', 'Failed runs, left out of every figure above (fix the cause and resume '
                  'them): ' + '; '.join(result['failed'])]
    if result.get('unfinished'):
        lines += ['', 'Runs not finished yet (in the per-cycle means, not in AUC, Δ and '
                  'labels): ' + ', '.join(result['unfinished'])]
    return '\n'.join(lines) + '\n'


def _pm(v: dict) -> str:
    return '–' if not v or not v['n'] else f'{v["mean"]:.4f} ± {v["std"]:.4f}'


def _diff(d: dict | None) -> str:
    if not d or d.get('mean') is None:
        return '–'
    n = len(d['seeds'])
    if d.get('ci') is None:
        return f'{d["mean"]:+.4f} (1 seed, no interval)'
    return (f'{d["mean"]:+.4f} [{d["ci"][0]:+.4f}, {d["ci"][1]:+.4f}] '
            f'({d["t_ci"][0]:+.4f}, {d["t_ci"][1]:+.4f}; {d["favourable"]}/{n})')


def write_plot(result: dict, path: Path) -> Path:
    """Mean ± std (shaded) of the metric and of the ranking accuracy, per strategy."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    fig, (ax, rank_ax) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    base = result.get('baseline')
    for name, s in result['strategies'].items():
        if not s['curve']:
            continue
        x = [p['num_labeled'] for p in s['curve']]
        m = [p['mean'] for p in s['curve']]
        sd = [p['std'] for p in s['curve']]
        style = dict(linestyle='--', color='black') if name == base else {}
        line, = ax.plot(x, m, marker='o', label=f'{name} (n={len(s["seeds"])})', **style)
        ax.fill_between(x, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                        color=line.get_color(), alpha=0.15)
        rows = [p for p in s['cycles'] if 'strategy' in p['ranking_accuracy']]
        if rows:
            rx = [p['num_labeled'] for p in rows]
            rm = [p['ranking_accuracy']['strategy']['mean'] for p in rows]
            rs = [p['ranking_accuracy']['strategy']['std'] for p in rows]
            rank_ax.plot(rx, rm, marker='o', color=line.get_color(), label=name,
                         linestyle=style.get('linestyle', '-'))
            rank_ax.fill_between(rx, [a - b for a, b in zip(rm, rs)],
                                 [a + b for a, b in zip(rm, rs)], color=line.get_color(),
                                 alpha=0.15)
    ax.set_xlabel('labeled samples')
    ax.set_ylabel(result['metric'])
    ax.set_title('label efficiency (mean ± std over seeds)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rank_ax.axhline(0.5, color='grey', linewidth=0.8)
    rank_ax.set_xlabel('labeled samples (model that scored)')
    rank_ax.set_ylabel('ranking accuracy vs true loss')
    rank_ax.set_title('how well each score orders the true losses')
    rank_ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
