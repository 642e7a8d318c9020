"""The tools' command lines follow mmdet's conventions.

``--help`` answers before torch is imported; every flag says what it does
and shows its default; ``--resume`` is mmdet's (alone, ``auto`` or a
checkpoint); ``--amp`` is mmdet's and reaches the experiment's config; the
tools that write have a default folder and never overwrite a batch.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOLS = sorted([*REPO.glob('tools/*.py'), *REPO.glob('tools/dataset_converters/*.py')])
#: Flags only al_compare passes to the children it starts (hidden from people).
INTERNAL = {'run_index', 'no_report'}
CONFIG = REPO / 'configs/active_learning/ll_ssd-tiny_synthetic-voc.py'


def load_tool(path: Path):
    """A tool imported as a module (its top level parses nothing)."""
    spec = importlib.util.spec_from_file_location(f'tool_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_torch(tmp_path: Path) -> dict:
    """An environment where ``import torch`` fails (a ``torch`` package that raises)."""
    fake = tmp_path / 'no_torch' / 'torch'
    fake.mkdir(parents=True)
    (fake / '__init__.py').write_text('raise ImportError("torch imported")\n')
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), str(REPO)]))


def test_the_environment_without_torch_does_stop_an_import_of_torch(tmp_path):
    """Else the --help tests below would pass with torch imported."""
    result = subprocess.run([sys.executable, '-c', 'import mmal'], env=without_torch(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and 'torch imported' in result.stderr


@pytest.mark.parametrize('tool', TOOLS, ids=lambda p: p.stem)
def test_help_answers_without_importing_torch(tool, tmp_path):
    env = without_torch(tmp_path)
    commands = [['--help']]
    if tool.stem == 'generate_data':
        commands += [['voc', '--help'], ['mpii', '--help']]
    for args in commands:
        result = subprocess.run([sys.executable, str(tool), *args], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith('usage:')


def parsers(parser: argparse.ArgumentParser):
    """``parser`` and its subcommands' parsers."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


@pytest.mark.parametrize('tool', TOOLS, ids=lambda p: p.stem)
def test_every_argument_says_what_it_does_and_shows_its_default(tool):
    module = load_tool(tool)
    assert callable(module.main)
    for parser in parsers(module.build_parser()):
        shown = ' '.join(parser.format_help().split())
        for action in parser._actions:
            name = '/'.join(action.option_strings) or action.dest
            if action.help == argparse.SUPPRESS:
                assert action.dest in INTERNAL, f'{tool.stem} {name}: hidden'
                continue
            assert action.help and action.help.strip(), f'{tool.stem} {name}: no help'
            if action.default not in (None, argparse.SUPPRESS) and action.option_strings:
                assert f'(default: {action.default})' in shown, (
                    f'{tool.stem} {name}: default {action.default!r} not shown')


def test_written_out_defaults_are_the_library_defaults():
    """generate_data and neu_det_to_voc write the defaults out (the dataclasses are
    behind torch); they must stay what the library uses."""
    from dataclasses import asdict

    from mmal.datasets import MPIISceneConfig, VOCSceneConfig
    from mmal.datasets.converters.neu_det import SplitSettings
    generate = load_tool(REPO / 'tools/generate_data.py')
    neu_det = load_tool(REPO / 'tools/dataset_converters/neu_det_to_voc.py')
    for written, library in [(generate.VOC_DEFAULTS, VOCSceneConfig()),
                             (generate.MPII_DEFAULTS, MPIISceneConfig()),
                             (neu_det.SPLIT_DEFAULTS, SplitSettings())]:
        assert written == {k: v for k, v in asdict(library).items() if k in written}


def test_launcher_flags_live_in_the_torch_free_module():
    from mmal.utils import cli, dist
    assert dist.LAUNCHERS is cli.LAUNCHERS
    assert not hasattr(dist, 'add_launcher_args')


# --------------------------------------------------------------------------- --resume
@pytest.fixture()
def al_train():
    return load_tool(REPO / 'tools/al_train.py')


def test_resume_is_mmdets_flag_auto_or_checkpoint(al_train, tmp_path):
    checkpoint = tmp_path / 'epoch_2.pth'
    checkpoint.write_bytes(b'')
    parser = al_train.build_parser()
    assert parser.parse_args(['c.py']).resume is None
    assert parser.parse_args(['c.py', '--resume']).resume == 'auto'
    assert parser.parse_args(['c.py', '--resume', 'auto']).resume == 'auto'
    assert parser.parse_args(['c.py', '--resume', str(checkpoint)]).resume == str(checkpoint)
    assert parser.parse_args(['--resume', str(checkpoint), 'c.py']).resume == str(checkpoint)


@pytest.mark.parametrize('value, message', [
    ('missing/epoch_9.pth', "checkpoint 'missing/epoch_9.pth' not found"),
    ('configs/x.py', "'configs/x.py' is a config, not a checkpoint"),
])
def test_resume_refuses_what_is_not_a_checkpoint(al_train, capsys, value, message):
    with pytest.raises(SystemExit) as exit_:
        al_train.build_parser().parse_args(['c.py', '--resume', value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert 'argument --resume' in err and message in err


def fake_record(work_dir: Path, statuses: list[str], failed: bool = False) -> None:
    from mmal.loop.state import ExperimentState
    state = ExperimentState.create(work_dir, settings=dict(seed=0), config_digests={}, versions={},
                                   pool_ids=['a', 'b'])
    for c, status in enumerate(statuses):
        state.start_cycle(c, ['a'])
        if status != 'started':
            state.mark(c, status)
    if failed:
        state.fail(len(statuses) - 1, dict(kind='loss', iteration=3, term='loss_cls'))
    state.save()


def test_a_checkpoint_resumes_only_the_interrupted_cycles_training(tmp_path):
    from mmal.loop.resume import interrupted_cycle
    from mmal.utils import ConfigError
    work = tmp_path / 'work'
    own, other = str(work / 'cycle_01/epoch_2.pth'), str(work / 'cycle_00/epoch_2.pth')
    with pytest.raises(ConfigError, match='holds no experiment to resume'):
        interrupted_cycle(work, own)
    work.mkdir()
    fake_record(work, ['selected', 'started'])
    assert interrupted_cycle(work, own) == 1
    assert interrupted_cycle(work, str(tmp_path / 'copied.pth')) == 1
    with pytest.raises(ConfigError, match="that is cycle 0's checkpoint"):
        interrupted_cycle(work, other)
    fake_record(work, ['selected', 'trained'])
    with pytest.raises(ConfigError, match='no training of .* was interrupted'):
        interrupted_cycle(work, own)
    fake_record(work, ['selected', 'started'], failed=True)
    with pytest.raises(ConfigError, match='cycle 1 failed'):
        interrupted_cycle(work, own)


def test_the_interrupted_cycles_runner_resumes_from_the_checkpoint(tmp_path):
    """``_train`` hands mmengine ``resume=True, load_from=CHECKPOINT`` (which then
    resumes from it) for the interrupted cycle only."""
    from mmal.loop.experiment import ActiveLearningExperiment

    class RunnerBuiltError(Exception):
        pass

    def runner(c, entry, phase, cycle_dir, **options):
        raise RunnerBuiltError(options)

    experiment = object.__new__(ActiveLearningExperiment)
    experiment.resume_checkpoint, experiment.resumed_cycle = '/x/epoch_2.pth', 1
    experiment.work_dir, experiment.semi = tmp_path, None  # supervised training
    experiment._runner, experiment._log = runner, lambda msg: None
    for c, expected in [(1, dict(resume=True, load_from='/x/epoch_2.pth')),
                        (0, dict(resume=False, load_from=None))]:
        with pytest.raises(RunnerBuiltError) as built:
            experiment._train(c, dict(num_labeled=1))
        assert built.value.args[0] == expected


# ------------------------------------------------------------------------------ --amp
class ReceivedError(Exception):
    """Raised by a stand-in experiment with what the tool gave it."""


@pytest.fixture()
def experiment_receives(monkeypatch):
    import mmal.loop

    def stand_in(cfg, work_dir, **kwargs):
        raise ReceivedError(cfg, work_dir, kwargs)
    monkeypatch.setattr(mmal.loop, 'ActiveLearningExperiment', stand_in)


def test_amp_reaches_the_experiments_config(al_train, experiment_receives, monkeypatch, tmp_path):
    from mmal.scoring import ScoringSettings
    monkeypatch.setattr(al_train.cli, 'amp_device_error', lambda: None)
    checkpoint = tmp_path / 'epoch_1.pth'
    checkpoint.write_bytes(b'')
    with pytest.raises(ReceivedError) as received:
        al_train.main([str(CONFIG), '--amp', '--resume', str(checkpoint), '--work-dir',
                       str(tmp_path / 'w')])
    cfg, _, kwargs = received.value.args
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert ScoringSettings.from_config(cfg).fp16  # the scoring passes' autocast
    assert kwargs['resume'] and kwargs['resume_checkpoint'] == str(checkpoint)
    with pytest.raises(ReceivedError) as received:
        al_train.main([str(CONFIG), '--resume', '--work-dir', str(tmp_path / 'w')])
    cfg, _, kwargs = received.value.args
    assert cfg.optim_wrapper.get('type', 'OptimWrapper') == 'OptimWrapper'
    assert kwargs['resume'] and kwargs['resume_checkpoint'] is None


def test_amp_keeps_an_amp_config_and_refuses_other_wrappers(al_train):
    from mmengine.config import Config
    args = al_train.build_parser().parse_args(['c.py', '--amp'])
    cfg = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper', dtype='bfloat16')))
    assert 'already trains with AmpOptimWrapper' in al_train.apply_flags(cfg, args)[0]
    assert cfg.optim_wrapper == dict(type='AmpOptimWrapper', dtype='bfloat16')
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapperDict')))
    with pytest.raises(ValueError, match="optim_wrapper is 'OptimWrapperDict': leave --amp out"):
        al_train.apply_flags(cfg, args)


def test_amp_without_a_gpu_is_refused_before_any_work(al_train, experiment_receives, capsys,
                                                      tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip('a GPU is visible: --amp can train')
    assert al_train.main([str(CONFIG), '--amp', '--work-dir', str(tmp_path / 'w')]) == 2
    assert "needs a GPU" in capsys.readouterr().err
    assert not (tmp_path / 'w').exists()


def test_al_compare_gives_amp_to_every_run(monkeypatch, tmp_path):
    import mmal.compare
    import mmal.compare.runs
    al_compare = load_tool(REPO / 'tools/al_compare.py')
    monkeypatch.setattr(al_compare.cli, 'amp_device_error', lambda: None)
    runs = []
    monkeypatch.setattr(mmal.compare, 'run_one', lambda cfg, spec, *a: runs.append(cfg))
    children = []
    monkeypatch.setattr(mmal.compare.runs, 'run_in_parallel',
                        lambda specs, jobs, argv, root: children.append(argv) or [])
    args = [str(CONFIG), '--strategies', 'RandomStrategy', '--seeds', '0', '--amp',
            '--work-dir', str(tmp_path / 'cmp')]
    al_compare.main(args)  # no run is evaluated: the report is refused, which is fine here
    assert runs and runs[0].optim_wrapper.type == 'AmpOptimWrapper'
    al_compare.main([*args, '--jobs', '2'])
    assert children and '--amp' in children[0]


# ------------------------------------------------------------------ default folders
def test_al_compare_puts_its_runs_in_the_configs_work_dir(monkeypatch, tmp_path):
    """Like al_train: no --work-dir means the config's work_dir, then work_dirs/."""
    import mmal.compare
    al_compare = load_tool(REPO / 'tools/al_compare.py')
    roots = []
    monkeypatch.setattr(mmal.compare, 'run_one', lambda cfg, spec, root, *a: roots.append(root))
    monkeypatch.chdir(tmp_path)
    args = [str(CONFIG), '--strategies', 'RandomStrategy', '--seeds', '0', '--no-report']
    al_compare.main([*args, '--cfg-options', f'work_dir={tmp_path / "mine"}'])
    al_compare.main(args)
    assert roots == [tmp_path / 'mine', Path('work_dirs') / f'compare_{CONFIG.stem}']


def test_al_query_never_writes_over_a_batch(tmp_path, monkeypatch, capsys):
    """Its default folder is work_dirs/<config name>/query; a batch there (or in any
    --out) may be with annotators, so a second query is refused."""
    al_query = load_tool(REPO / 'tools/al_query.py')
    monkeypatch.chdir(tmp_path)
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')
    default = tmp_path / 'work_dirs' / CONFIG.stem / 'query'
    default.mkdir(parents=True)
    (default / 'batch.json').write_text(json.dumps(dict(tasks=[])))
    args = [str(CONFIG), '--checkpoint', str(checkpoint), '--budget', '2']
    assert al_query.main(args) == 2
    err = capsys.readouterr().err
    assert f'--out {os.path.join(".", "work_dirs", CONFIG.stem, "query")} already holds a ' \
           'batch' in err and 'choose another --out' in err
    assert al_query.main([*args, '--out', str(default)]) == 2


def test_al_serve_works_in_its_default_folder(tmp_path, monkeypatch):
    import mmal.service.serve
    al_serve = load_tool(REPO / 'tools/al_serve.py')
    monkeypatch.chdir(tmp_path)

    def stand_in(cfg, work_dir, *args, **kwargs):
        raise ReceivedError(work_dir)
    monkeypatch.setattr(mmal.service.serve, 'AnnotationServer', stand_in)
    with pytest.raises(ReceivedError) as received:
        al_serve.main([str(CONFIG), '--folder', str(tmp_path / 'exchange')])
    assert received.value.args[0] == os.path.join('.', 'work_dirs', CONFIG.stem, 'serve')


class SimulatedKillError(RuntimeError):
    pass


@pytest.mark.slow
def test_a_named_checkpoint_resumes_the_training_from_there(tiny_cfg, tmp_path):
    """Killed in epoch 3 (epoch_1.pth and epoch_2.pth written), resumed from epoch_1.pth:
    epochs 2 and 3 train again, and the cycle ends as the uninterrupted one."""
    import copy

    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    from mmal.loop import ActiveLearningExperiment
    marker = tmp_path / 'killed_once'

    @HOOKS.register_module(force=True)
    class DieOnceInThirdEpoch(Hook):
        def after_train_epoch(self, runner):  # before the checkpoint hook's
            if runner.epoch == 2 and not marker.exists():
                marker.touch()
                raise SimulatedKillError

    cfg = copy.deepcopy(tiny_cfg)
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg.max_epochs = 3
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False)]
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=3)
    cfg.active_learning = dict(initial_size=8, budget_per_cycle=8, num_cycles=1,
                               candidate_pool=24, strategy=dict(type='RandomStrategy'),
                               score_batch_size=8, score_num_workers=0, seed=0)

    def run(work_dir, **kwargs):
        return ActiveLearningExperiment(copy.deepcopy(cfg), str(work_dir), **kwargs).run()

    uninterrupted = run(tmp_path / 'whole').cycle(0)['metrics']
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='DieOnceInThirdEpoch')]
    work = tmp_path / 'work'
    with pytest.raises(SimulatedKillError):
        run(work)
    cycle_dir = work / 'cycle_00'
    assert (cycle_dir / 'epoch_2.pth').exists() and not (cycle_dir / 'epoch_3.pth').exists()
    state = run(work, resume=True, resume_checkpoint=str(cycle_dir / 'epoch_1.pth'))
    logs = '\n'.join(p.read_text() for p in cycle_dir.glob('*/*.log')).lower()
    assert 'resumed epoch: 1' in logs and 'resumed epoch: 2' not in logs
    assert state.cycle(0)['metrics'] == uninterrupted


# ------------------------------------------------------------------ --cfg-options
def test_a_schedule_variable_alone_is_refused_naming_the_loop_keys(al_train, experiment_receives,
                                                                   capsys, tmp_path):
    """`max_epochs=N` reaches neither train_cfg nor the schedulers (the file computed them):
    refused before any work, naming the keys; with them set, the run gets N."""
    assert al_train.main([str(CONFIG), '--work-dir', str(tmp_path / 'w'),
                          '--cfg-options', 'max_epochs=3']) == 2
    err = capsys.readouterr().err
    assert 'max_epochs=3 changes the config\'s variable only' in err
    assert 'train_cfg.max_epochs is still 40' in err and 'param_scheduler.1.end=3' in err
    assert not (tmp_path / 'w').exists()
    with pytest.raises(ReceivedError) as received:
        al_train.main([str(CONFIG), '--work-dir', str(tmp_path / 'w'), '--cfg-options',
                       'max_epochs=3', 'train_cfg.max_epochs=3', 'param_scheduler.1.end=3'])
    assert received.value.args[0].train_cfg.max_epochs == 3
