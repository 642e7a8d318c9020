"""The comparison scripts in bench/ parse, and without their arguments stop at once with
their usage (before installing or running anything)."""
import os
import subprocess

import pytest

from .conftest import REPO

SCRIPTS = sorted((REPO / 'bench').glob('*.sh'))


def test_there_are_scripts():
    assert {p.name for p in SCRIPTS} >= {'semi_supervised_arms.sh', 'cost_arms.sh'}


@pytest.mark.parametrize('script', SCRIPTS, ids=lambda p: p.name)
def test_a_script_parses_and_names_its_usage(script, tmp_path):
    assert subprocess.run(['bash', '-n', str(script)]).returncode == 0
    result = subprocess.run(['bash', str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert f'usage: bash bench/{script.name}' in result.stderr
    assert 'mmal install' not in result.stdout + result.stderr


@pytest.mark.parametrize('args, cores, threads', [
    ([], 2, 1),                                # two comparisons of one run each
    (['--seeds', '0', '1', '--jobs', '2'], 16, 4),
    (['--jobs=3', '--seeds', '0'], 16, 2),
    (['--jobs', '4'], 4, 1),                   # never fewer than one
])
def test_two_comparisons_at_once_share_the_cores(args, cores, threads):
    """al_compare divides the cores by its own --jobs; two comparisons at once must each
    take half of that, or every run's OpenMP threads fight for the cores."""
    script = (f'nproc() {{ echo {cores}; }}; source bench/lib/two_comparisons.sh; '
              'share_threads "$@"; echo "$OMP_NUM_THREADS"')
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    result = subprocess.run(['bash', '-c', script, 'bash', *args], cwd=REPO, env=env,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(threads)
    env['OMP_NUM_THREADS'] = '7'  # the user's own setting stands
    result = subprocess.run(['bash', '-c', script, 'bash', *args], cwd=REPO, env=env,
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == '7'


def test_the_scripts_share_the_cores_before_starting_their_comparisons():
    for name in ('semi_supervised_arms.sh', 'cost_arms.sh'):
        text = (REPO / 'bench' / name).read_text()
        assert text.index('share_threads "$@"') < text.index('tools/al_compare.py'), name
