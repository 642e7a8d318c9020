"""The installer refuses what cannot work, loudly, before touching anything."""
import os
import subprocess

from .conftest import REPO


def _install(env_overrides: dict) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_overrides)
    env.pop('VIRTUAL_ENV', None)
    return subprocess.run(['bash', str(REPO / 'tools/install.sh')], env=env,
                          capture_output=True, text=True, timeout=120)


def test_missing_interpreter_is_named(tmp_path):
    result = _install({'MMAL_PYTHON': str(tmp_path / 'nope' / 'python')})
    assert result.returncode != 0
    assert 'does not exist or is not executable' in result.stderr
    assert 'MMAL_PYTHON' in result.stderr


def test_unsupported_python_is_refused(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text('#!/bin/sh\necho 3.9\n')
    fake.chmod(0o755)
    result = _install({'MMAL_PYTHON': str(fake)})
    assert result.returncode != 0
    assert 'Python 3.9 is not supported' in result.stderr


def test_second_run_is_a_quick_check():
    """On an installed environment the installer only re-checks the imports."""
    result = subprocess.run(['bash', str(REPO / 'tools/install.sh')], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'compiled ops checked' in result.stdout
    assert 'building mmcv' not in result.stdout
