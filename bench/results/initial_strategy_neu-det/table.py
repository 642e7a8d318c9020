"""NEU-DET's first two cycles from a TypiClust initial set against a random one, per seed.

    python bench/results/initial_strategy_neu-det/table.py

Random start: the Learning Loss runs of ../compare_neu-det (seed 0 from compare_seed0.json,
seeds 1 and 2 from their records); TypiClust start: runs/ here. Prints the table and the
paired differences with their t-intervals.
"""
import json
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).parent
RANDOM_START = HERE.parent / 'compare_neu-det'


def first_two(cycles: list[dict]) -> list[float]:
    return [c['metrics']['pascal_voc/mAP'] for c in cycles if c.get('metrics')][:2]


def main() -> None:
    seed0 = json.loads((RANDOM_START / 'compare_seed0.json').read_text())
    random = {0: [c['metrics']['pascal_voc/mAP']['mean'] for c in
                  seed0['strategies']['LearningLossStrategy']['cycles']][:2]}
    typiclust = {}
    for seed in (0, 1, 2):
        if seed:
            state = RANDOM_START / f'runs/LearningLossStrategy/seed{seed}/al_state.json'
            random[seed] = first_two(json.loads(state.read_text())['cycles'])
        state = HERE / f'runs/LearningLossStrategy/seed{seed}/al_state.json'
        typiclust[seed] = first_two(json.loads(state.read_text())['cycles'])
    print('| seed | random start: 100 | then 200 | TypiClust start: 100 | then 200 |')
    print('| --- | --- | --- | --- | --- |')
    for seed in (0, 1, 2):
        cells = [*random[seed], *typiclust[seed]]
        print(f'| {seed} | ' + ' | '.join(f'{v:.3f}' for v in cells) + ' |')
    for i, labeled in enumerate((100, 200)):
        diffs = [typiclust[s][i] - random[s][i] for s in (0, 1, 2)]
        mean, se = np.mean(diffs), np.std(diffs, ddof=1) / np.sqrt(len(diffs))
        half = stats.t.ppf(0.975, len(diffs) - 1) * se
        print(f'{labeled} labels: TypiClust - random {mean:+.3f} (per seed '
              f'{", ".join(f"{d:+.3f}" for d in diffs)}; 95 % t-interval '
              f'[{mean - half:+.3f}, {mean + half:+.3f}])')


if __name__ == '__main__':
    main()
