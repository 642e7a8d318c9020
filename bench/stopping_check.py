"""Where the stopping signal would have stopped finished runs, and what that would
have left on the table.

    python bench/stopping_check.py DIR [DIR ...] [--threshold T] [--patience P] [--out F.md]

DIR: a comparison folder (``DIR/<name>/seed<k>/al_state.json``) or one run's
folder. For each run the recorded stop-set agreements are read again under
the given threshold and patience (default: the run's own), so the defaults
can be checked against curves without rerunning anything: the first cycle
that says "stop here", its metric, the final metric, the difference (what
stopping there would have lost) and the labels it would have saved.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mmal.loop.reporting import evaluated_cycles, primary_metric  # noqa: E402
from mmal.loop.state import STATE_FILE, ExperimentState  # noqa: E402
from mmal.loop.stopping import StoppingSettings, stop_here  # noqa: E402


def stop_point(cycles: list[dict], settings: StoppingSettings) -> int | None:
    """Index of the first evaluated cycle whose agreements so far say "stop here"."""
    agreements = []
    for i, cycle in enumerate(cycles):
        if cycle.get('stop_agreement') is not None:
            agreements.append(cycle['stop_agreement'])
            if stop_here(agreements, settings):
                return i
    return None


def check_run(folder: Path, threshold: float | None, patience: int | None) -> dict:
    data = ExperimentState.load(folder).data
    cycles = evaluated_cycles(data['cycles'])
    recorded = StoppingSettings.from_dict(data['settings'].get('stopping'))
    settings = StoppingSettings(
        **{**recorded.__dict__, **({} if threshold is None else dict(threshold=threshold)),
           **({} if patience is None else dict(patience=patience))})
    metric = primary_metric(cycles[0]['metrics'])
    at = stop_point(cycles, settings)
    final = cycles[-1]
    row = dict(run=str(folder), metric=metric, final=final['metrics'][metric],
               final_labeled=final['num_labeled'],
               agreements=[c.get('stop_agreement') for c in cycles],
               pred_loss=[c.get('stop_pred_loss') for c in cycles], stop_cycle=None)
    if at is not None:
        row.update(stop_cycle=cycles[at]['cycle'], stop_labeled=cycles[at]['num_labeled'],
                   at_stop=cycles[at]['metrics'][metric],
                   left_on_table=final['metrics'][metric] - cycles[at]['metrics'][metric],
                   labels_saved=final['num_labeled'] - cycles[at]['num_labeled'])
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('dirs', nargs='+')
    parser.add_argument('--threshold', type=float)
    parser.add_argument('--patience', type=int)
    parser.add_argument('--out', help='write the table there as well')
    args = parser.parse_args(argv)
    folders = sorted({p.parent for d in args.dirs for p in Path(d).glob(f'**/{STATE_FILE}')
                      if '_shared' not in p.parts})
    lines = ['| run | agreement per cycle | stop-set predicted loss | stops at | metric there '
             '| final | left on the table | labels saved |', '|---|---|---|---|---|---|---|---|']
    for folder in folders:
        r = check_run(folder, args.threshold, args.patience)
        agree = ' / '.join('–' if a is None else f'{a:.2f}' for a in r['agreements'])
        loss = ' / '.join('–' if v is None else f'{v:.3g}' for v in r['pred_loss'])
        if r['stop_cycle'] is None:
            tail = f'never | – | {r["final"]:.4f} | – | – |'
        else:
            tail = (f'cycle {r["stop_cycle"]} ({r["stop_labeled"]} labeled) | '
                    f'{r["at_stop"]:.4f} | {r["final"]:.4f} | {r["left_on_table"]:+.4f} | '
                    f'{r["labels_saved"]} |')
        lines.append(f'| {folder} | {agree} | {loss} | {tail}')
    table = '\n'.join(lines) + '\n'
    print(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
