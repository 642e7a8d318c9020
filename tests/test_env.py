"""The recorded software: package versions (state, benchmarks) and the machine."""
import importlib.metadata as md
import importlib.util
import json

from mmal.utils import env

from .conftest import REPO


def test_package_versions_are_the_installed_ones_and_none_when_missing(monkeypatch):
    versions = env.package_versions()
    # the keys of al_state.json's `versions`, in this order
    assert list(versions) == ['mmal', 'torch', 'mmengine', 'mmcv', 'mmdet', 'mmpose']
    assert versions['mmengine'] == md.version('mmengine')
    assert versions['mmal'] == md.version('mmal')
    monkeypatch.setattr(env, 'PACKAGES', ('mmengine', 'no-such-distribution-mmal'))
    assert env.package_versions() == {'mmengine': md.version('mmengine'),
                                      'no-such-distribution-mmal': None}


def test_a_benchmark_machine_description_is_json_with_the_keys_reports_read():
    spec = importlib.util.spec_from_file_location('bench_common', REPO / 'bench/common.py')
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    info = json.loads(json.dumps(common.machine()))
    assert info['device'] == common.device()
    assert info['cpu_count'] >= 1
    assert info['collect_env']['MMEngine'] == md.version('mmengine')
    assert info['mmdet'] == md.version('mmdet')
    assert ('gpu' in info) == info['collect_env']['CUDA available']
