"""The comparison scripts in bench/ parse, and without their arguments stop at once with
their usage (before installing or running anything)."""
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
