"""Collect finished runs and write the comparison: CSV, JSON, Markdown, PNG.

Runs are read from their ``al_state.json`` only, so a comparison can be
re-rendered at any time (``--plot-only``) and can merge runs made elsewhere.
"""
import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..loop.cost import UNITS, AnnotationCost, labeled_cost
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
    #: The unit its budgets were spent in (``active_learning.cost``).
    budget_unit: str = 'images'


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
            unit = AnnotationCost.from_config(data['settings'].get('cost', 'images')).unit
            if cycles or failure:
                runs[key] = Run(name, seed, path.parent, data.get('status') == 'finished',
                                cycles, failure, unit)
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
            confidence: float = 0.95, unit: str | None = None) -> dict:
    """Per strategy: the mean curve of every metric, AUC, labels needed, paired differences.

    Curves run against the labeled set's cost in ``unit`` (images, boxes or
    seconds, :mod:`mmal.loop.cost`; by default the unit the baseline's
    budgets were spent in), each point at the seeds' mean cost; the cost to
    reach the baseline is given in that unit and in images.

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
        unit (str, optional): The cost unit of the curves.
    """
    failed = sorted(f'{r.name} seed {r.seed}: {r.failure}' for r in runs if r.failure)
    runs = [r for r in runs if not r.failure]
    if not runs:
        raise ValueError('no run with an evaluated cycle to compare'
                         + (f'; failed: {"; ".join(failed)}' if failed else ''))
    unit = unit or next((r.budget_unit for r in runs if r.name == baseline), runs[0].budget_unit)
    _check_unit(runs, unit)
    metric = metric or primary_metric(runs[0].cycles[0]['metrics'])
    summarised = [r for r in runs if r.finished] or runs
    horizon = min(len(r.cycles) for r in summarised)
    names = sorted({r.name for r in runs}, key=lambda n: (n != baseline, n))
    result = dict(metric=metric, baseline=baseline if baseline in names else None,
                  confidence=confidence, horizon=horizon, cost_unit=unit,
                  unfinished=sorted(f'{r.name} seed {r.seed}' for r in runs if not r.finished),
                  failed=failed, strategies={})
    for name in names:
        result['strategies'][name] = _strategy_summary(
            [r for r in runs if r.name == name], [r for r in summarised if r.name == name],
            metric, horizon, unit)
    base = result['strategies'].get(baseline)
    if base is None or not base['summary_curve']:
        return result
    target = base['summary_curve'][-1]['mean']
    result['baseline_final'] = target
    result['seed_warnings'] = _seed_warnings(summarised, baseline)
    result['horizon_labeled'] = base['summary_curve'][-1]['num_labeled']
    result['horizon_cost'] = base['summary_curve'][-1]['cost']
    for name, summary in result['strategies'].items():
        for x, to_reach, saved in (('num_labeled', 'labels_to_reach_baseline', 'labels_saved'),
                                   ('cost', 'cost_to_reach_baseline', 'cost_saved')):
            points = summary['summary_curve']
            needed = stats.labels_to_reach([p[x] for p in points], [p['mean'] for p in points],
                                           target) if points else None
            summary[to_reach] = needed
            summary[saved] = None if needed is None else base['summary_curve'][-1][x] - needed
        summary['cost_saved_per_seed'] = _saved_per_seed(summary['cost_per_seed'], target,
                                                         result['horizon_cost'], confidence)
        if name != baseline:
            summary['vs_baseline'] = dict(
                auc=_difference(summary['auc']['per_seed'], base['auc']['per_seed'],
                                confidence),
                final=_difference(summary['final_per_seed'], base['final_per_seed'],
                                  confidence))
    return result


def _check_unit(runs: list[Run], unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f'cost unit {unit!r} must be one of {UNITS}')
    old = [f'{r.name} seed {r.seed}' for r in runs
           if any(labeled_cost(e, unit) is None for e in r.cycles)]
    if old:
        raise ValueError(f'{", ".join(old)}: the record counts no {unit} (written before '
                         'costs were recorded); compare in images (--cost images)')


def _strategy_summary(group: list[Run], summarised: list[Run], metric: str,
                      horizon: int, unit: str) -> dict:
    cycles = sorted({c['cycle'] for r in group for c in r.cycles})
    curve, table = [], []
    for c in cycles:
        entries = [(r.seed, e) for r in group for e in r.cycles if e['cycle'] == c]
        labeled = sorted({e['num_labeled'] for _, e in entries})
        # A budget in boxes or seconds labels a different number of images per seed.
        if len(labeled) != 1 and all(r.budget_unit == 'images' for r in group):
            raise ValueError(f'{group[0].name} cycle {c}: runs disagree on the labeled count '
                             f'{labeled}; compare runs of one plan')
        keys = sorted({k for _, e in entries for k in e['metrics']})
        row = dict(cycle=c, num_labeled=_mean([e['num_labeled'] for _, e in entries]),
                   cost=_mean([labeled_cost(e, unit) for _, e in entries]), metrics={},
                   ranking_accuracy={})
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
        curve.append(dict(num_labeled=row['num_labeled'], cost=row['cost'],
                          **row['metrics'][metric],
                          per_seed={s: e['metrics'].get(metric) for s, e in entries}))
    # The summary: finished runs, first `horizon` cycles.
    auc = stats.finite({r.seed: stats.normalised_auc(
        [labeled_cost(e, unit) for e in r.cycles[:horizon]],
        [e['metrics'].get(metric, float('nan')) for e in r.cycles[:horizon]])
        for r in summarised})
    final = stats.finite({r.seed: r.cycles[horizon - 1]['metrics'].get(metric)
                          for r in summarised})
    summary_curve = [dict(
        num_labeled=_mean([r.cycles[i]['num_labeled'] for r in summarised]),
        cost=_mean([labeled_cost(r.cycles[i], unit) for r in summarised]),
        mean=stats.mean_std([r.cycles[i]['metrics'].get(metric) for r in summarised])[0])
        for i in range(horizon)] if summarised else []
    mean, std, n = stats.mean_std(list(auc.values()))
    cost_per_seed = {r.seed: [(labeled_cost(e, unit), e['metrics'].get(metric, float('nan')))
                              for e in r.cycles[:horizon]] for r in summarised}
    return dict(seeds=sorted(r.seed for r in group), cycles=table, curve=curve,
                cost_per_seed=cost_per_seed,
                auc=dict(mean=mean, std=std, n=n, per_seed=auc), final_per_seed=final,
                summary_curve=summary_curve)


def _saved_per_seed(curves: dict[int, list], target: float, end: float,
                    confidence: float) -> dict:
    """Per seed, the cost saved reaching ``target`` (the baseline's final mean) against
    ``end`` (the baseline's cost there); their mean and t-interval when every seed
    reached it (an interval over the seeds that did would flatter the strategy)."""
    saved = {}
    for seed, points in curves.items():
        needed = stats.labels_to_reach([x for x, _ in points], [y for _, y in points], target)
        saved[seed] = None if needed is None else end - needed
    reached = [v for v in saved.values() if v is not None]
    out = dict(per_seed=saved, reached=len(reached), seeds=len(saved), mean=None, t_ci=None)
    if reached and len(reached) == len(saved):
        out['mean'] = float(np.mean(reached))
        if len(reached) >= 2:
            out['t_ci'] = list(stats.t_interval(reached, confidence))
    return out


def _mean(values: list[float]) -> float | int:
    """The mean, an int when it is a whole number (a labeled count)."""
    mean = float(sum(values) / len(values))
    return int(mean) if mean.is_integer() else mean


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
    unit = result.get('cost_unit', 'images')
    writer.writerow(['strategy', 'cycle', 'num_labeled', 'metric', 'mean', 'std', 'n',
                     f'labeled_{unit}'])
    for name, summary in result['strategies'].items():
        for row in summary['cycles']:
            values = [*row['metrics'].items(),
                      *((f'ranking_accuracy/{k}', v) for k, v in row['ranking_accuracy'].items())]
            for key, v in values:
                writer.writerow([name, row['cycle'], row['num_labeled'], key,
                                 repr(v['mean']), repr(v['std']), v['n'], row['cost']])
    return buf.getvalue()


def to_markdown(result: dict) -> str:
    """The comparison as Markdown tables, ready to quote."""
    base = result.get('baseline')
    unit = result.get('cost_unit', 'images')
    pct = int(round(result['confidence'] * 100))
    names = list(result['strategies'])
    lines = _curve_table(result) if unit == 'images' else _cost_curve_table(result)
    if base and 'baseline_final' in result:
        end = (f'{result["horizon_labeled"]} labeled samples' if unit == 'images' else
               f'{result["horizon_cost"]:.0f} {unit} ({result["horizon_labeled"]:.0f} '
               'labeled samples)')
        columns = [('labels_to_reach_baseline', 'labels_saved', 'labels')]
        if unit != 'images':
            columns.insert(0, ('cost_to_reach_baseline', 'cost_saved', unit))
        per_seed_note = (f'{unit} saved per seed: mean (t-interval) when every seed reaches '
                         'it, else how many did')
        lines += ['', f'Against {base}, paired by seed, up to {end}: mean difference '
                  f'[{pct}% bootstrap CI] (t-interval; seeds better/all). What each strategy '
                  f'needs to reach {base}\'s mean at {end} ({result["baseline_final"]:.4f}):',
                  '', '| strategy | Δ AUC | Δ at the last cycle | '
                  + ' | '.join(f'{what} to reach | {what} saved' for *_, what in columns)
                  + f' | {per_seed_note} |', '|---|---|---|' + '---|---|' * len(columns) + '---|']
        for name in names:
            s = result['strategies'][name]
            vs = s.get('vs_baseline', {})
            cells = []
            for to_reach, saved, _ in columns:
                needed, saved = s.get(to_reach), s.get(saved)
                cells += ['not reached' if needed is None else f'{needed:.0f}',
                          '–' if saved is None else f'{saved:+.0f}']
            lines.append(f'| {name} | {_diff(vs.get("auc"))} | {_diff(vs.get("final"))} | '
                         + ' | '.join(cells) + f' | {_saved(s["cost_saved_per_seed"])} |')
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


def _curve_table(result: dict) -> list[str]:
    """The metric per labeled count, a column each."""
    labeled = sorted({p['num_labeled'] for s in result['strategies'].values() for p in s['curve']})
    lines = [f'{result["metric"]} (mean ± std over seeds) against labeled samples', '',
             '| strategy | seeds | ' + ' | '.join(str(x) for x in labeled)
             + ' | AUC (normalised) |', '|---|---|' + '---|' * (len(labeled) + 1)]
    for name, s in result['strategies'].items():
        at = {p['num_labeled']: p for p in s['curve']}
        cells = [f'{at[x]["mean"]:.4f} ± {at[x]["std"]:.4f}' if x in at else '–' for x in labeled]
        lines.append(f'| {name} | {len(s["seeds"])} | ' + ' | '.join(cells)
                     + f' | {_pm(s["auc"])} |')
    return lines


def _cost_curve_table(result: dict) -> list[str]:
    """The metric per cycle, each cell at the seeds' mean cost: strategies spend
    different costs on the same number of cycles."""
    unit = result['cost_unit']
    cycles = sorted({row['cycle'] for s in result['strategies'].values() for row in s['cycles']})
    lines = [f'{result["metric"]} (mean ± std over seeds) per cycle, at the mean labeled '
             f'cost in {unit} (and images)', '',
             '| strategy | seeds | ' + ' | '.join(f'cycle {c}' for c in cycles)
             + f' | AUC over {unit} (normalised) |', '|---|---|' + '---|' * (len(cycles) + 1)]
    for name, s in result['strategies'].items():
        at = dict(zip((row['cycle'] for row in s['cycles']), s['curve']))
        cells = [f'{at[c]["mean"]:.4f} ± {at[c]["std"]:.4f} @ {at[c]["cost"]:.0f} '
                 f'({at[c]["num_labeled"]:.0f} img)' if c in at else '–' for c in cycles]
        lines.append(f'| {name} | {len(s["seeds"])} | ' + ' | '.join(cells)
                     + f' | {_pm(s["auc"])} |')
    return lines


def _saved(v: dict) -> str:
    if v['mean'] is None:
        return f'{v["reached"]}/{v["seeds"]} seeds reach it'
    if v['t_ci'] is None:
        return f'{v["mean"]:+.0f} (1 seed)'
    return f'{v["mean"]:+.0f} ({v["t_ci"][0]:+.0f}, {v["t_ci"][1]:+.0f})'


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
        x = [p['cost'] for p in s['curve']]
        m = [p['mean'] for p in s['curve']]
        sd = [p['std'] for p in s['curve']]
        style = dict(linestyle='--', color='black') if name == base else {}
        line, = ax.plot(x, m, marker='o', label=f'{name} (n={len(s["seeds"])})', **style)
        ax.fill_between(x, [a - b for a, b in zip(m, sd)], [a + b for a, b in zip(m, sd)],
                        color=line.get_color(), alpha=0.15)
        rows = [p for p in s['cycles'] if 'strategy' in p['ranking_accuracy']]
        if rows:
            rx = [p['cost'] for p in rows]
            rm = [p['ranking_accuracy']['strategy']['mean'] for p in rows]
            rs = [p['ranking_accuracy']['strategy']['std'] for p in rows]
            rank_ax.plot(rx, rm, marker='o', color=line.get_color(), label=name,
                         linestyle=style.get('linestyle', '-'))
            rank_ax.fill_between(rx, [a - b for a, b in zip(rm, rs)],
                                 [a + b for a, b in zip(rm, rs)], color=line.get_color(),
                                 alpha=0.15)
    unit = result.get('cost_unit', 'images')
    xlabel = 'labeled samples' if unit == 'images' else f'labeled set, {unit} (mean over seeds)'
    ax.set_xlabel(xlabel)
    ax.set_ylabel(result['metric'])
    ax.set_title('label efficiency (mean ± std over seeds)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    rank_ax.axhline(0.5, color='grey', linewidth=0.8)
    rank_ax.set_xlabel(f'{xlabel} (model that scored)')
    rank_ax.set_ylabel('ranking accuracy vs true loss')
    rank_ax.set_title('how well each score orders the true losses')
    rank_ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
