"""What the tools' argument parsers share, importable before torch.

The tools parse their arguments before importing anything heavy, so that
``--help`` and a mistyped flag answer at once. This module therefore
imports the standard library only; the tools load it by file path
(importing ``mmal.utils.cli`` would first run ``mmal/__init__.py``, which
registers every model and so imports torch, mmdet and mmpose; it must:
``custom_imports=dict(imports=['mmal'])`` relies on that import registering
the models, so it cannot be made lazy). Keep it so:
``tests/test_cli.py`` runs every tool's ``--help`` where torch cannot be
imported.
"""
import argparse
import os
import os.path as osp

#: The ``--launcher`` choices: mmdet's, less ``mpi``.
LAUNCHERS = ('none', 'pytorch', 'slurm')


class HelpFormatter(argparse.RawDescriptionHelpFormatter,
                    argparse.ArgumentDefaultsHelpFormatter):
    """mmdet's tools' help: the description as written, each default after its flag.

    A default of None is not shown: it means "not given", and the flag's
    help says what happens then (often a value computed from the config).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        # argparse's one place to decide whether '(default: ...)' is appended.
        if action.default is None:
            return action.help or ''
        return super()._get_help_string(action)


def add_cfg_options(parser: argparse.ArgumentParser,
                    help: str = 'override config settings, e.g. '
                    'active_learning.strategy.type=RandomStrategy') -> None:
    """Add mmdet's ``--cfg-options key=value ...`` to ``parser``.

    It is mmengine's own ``DictAction``, so a value parses exactly as in
    mmdet's tools (lists, tuples, quoting). ``mmengine.config`` imports
    numpy and yaml but not torch (mmengine 0.10.7; ``tests/test_cli.py``
    checks it), so it is imported here, when a parser is built, and not
    when this module is.
    """
    from mmengine.config import DictAction
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                        help=help + " (mmengine's syntax: 'key=[a,b]' is a list; quote it in the "
                        'shell)')


def add_launcher_args(parser: argparse.ArgumentParser) -> None:
    """Add mmdet's ``--launcher`` and ``--local_rank`` / ``--local-rank`` to ``parser``.

    As in mmdet's ``tools/train.py``, ``LOCAL_RANK`` is then in the
    environment, where mmengine reads it: the value a launcher exported
    (torchrun), else ``--local-rank`` (passed by ``torch.distributed.launch``),
    else 0.
    """
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none',
                        help='job launcher: none (one process), pytorch (torchrun, '
                        'tools/dist_al_train.sh) or slurm (srun, tools/slurm_al_train.sh)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        action=_ExportLocalRank,
                        help="this process's GPU on its node (LOCAL_RANK, if set, wins)")
    os.environ.setdefault('LOCAL_RANK', '0')


class _ExportLocalRank(argparse.Action):
    """Stores ``--local-rank`` and exports it, unless the launcher exported one."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Noted before add_launcher_args sets the default, which must not win.
        self.launcher_set_it = 'LOCAL_RANK' in os.environ

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        if not self.launcher_set_it:
            os.environ['LOCAL_RANK'] = str(values)


#: ``--resume`` alone: continue where the experiment stopped (mmdet's ``auto``).
RESUME_AUTO = 'auto'


def add_resume_arg(parser: argparse.ArgumentParser, help: str) -> None:
    """Add mmdet's ``--resume [auto | CHECKPOINT]`` to ``parser``.

    ``args.resume`` is then None (not given), :data:`RESUME_AUTO` (given
    alone or as ``auto``) or the path of an existing checkpoint file; a
    path that is not one stops the parser (exit code 2) naming it.
    """
    parser.add_argument('--resume', nargs='?', const=RESUME_AUTO, type=_resume_value,
                        metavar='CHECKPOINT', help=help)


def _resume_value(text: str) -> str:
    if text == RESUME_AUTO:
        return text
    if text.endswith('.py'):
        raise argparse.ArgumentTypeError(
            f'{text!r} is a config, not a checkpoint: put the config first, '
            f'CONFIG --resume [CHECKPOINT]')
    if not osp.isfile(text):
        raise argparse.ArgumentTypeError(
            f'checkpoint {text!r} not found: give an existing checkpoint file (e.g. '
            'WORK_DIR/cycle_02/epoch_3.pth), or --resume alone to continue from the last one')
    return text


def resume_checkpoint(resume: str | None) -> str | None:
    """The checkpoint ``--resume`` names (absolute), None for none or ``auto``."""
    return None if resume in (None, RESUME_AUTO) else osp.abspath(resume)


#: What ``--amp`` does, for the tools' help.
AMP_HELP = ("mixed-precision training as mmdet's --amp: optim_wrapper.type='AmpOptimWrapper' "
            "with loss_scale='dynamic' (a GPU is needed: mmengine's AmpOptimWrapper refuses "
            'CPUs); the evaluation and the scoring passes run under autocast too '
            '(test_cfg.fp16=True). An experiment started without it resumes only without it')


def apply_amp(cfg) -> str | None:
    """``--amp`` applied to ``cfg`` (an mmengine Config), as mmdet's ``tools/train.py``.

    ``optim_wrapper.type`` becomes ``'AmpOptimWrapper'`` with dynamic loss
    scaling, and ``test_cfg.fp16`` is set: the evaluation's ``TestLoop``
    and MMAL's scoring (``ScoringSettings.fp16``) then run under autocast.

    Returns:
        str | None: A note to print when the config already trained under
        AMP (its wrapper is kept as configured, as mmdet does).

    Raises:
        ValueError: The config has no ``optim_wrapper``, or one of another
            type than ``OptimWrapper`` (e.g. ``OptimWrapperDict``), which
            ``--amp`` cannot turn into ``AmpOptimWrapper``.
    """
    wrapper = cfg.get('optim_wrapper')
    if not wrapper:
        raise ValueError('--amp: the config has no optim_wrapper to train in mixed precision')
    kind = wrapper.get('type', 'OptimWrapper')
    kind = getattr(kind, '__name__', kind)  # a config may name the class itself
    note = None
    if kind == 'AmpOptimWrapper':
        note = ('--amp: the config already trains with AmpOptimWrapper; its settings are '
                'kept')
    elif kind != 'OptimWrapper':
        raise ValueError(
            f"--amp makes optim_wrapper.type='OptimWrapper' an 'AmpOptimWrapper', and this "
            f'config\'s optim_wrapper is {kind!r}: leave --amp out and set its mixed '
            'precision in the config')
    else:
        wrapper['type'] = 'AmpOptimWrapper'
        wrapper['loss_scale'] = 'dynamic'
    cfg['test_cfg'] = dict(cfg.get('test_cfg') or {}, fp16=True)
    return note


def amp_device_error() -> str | None:
    """Why ``--amp`` cannot train here, None when it can.

    mmengine's ``AmpOptimWrapper`` asserts a CUDA, NPU, MLU or MUSA device
    when the first Runner builds it, which would be after the pool is read
    and the record written; this says so before any work. Imports torch.
    """
    from mmengine.device import (
        is_cuda_available,
        is_mlu_available,
        is_musa_available,
        is_npu_available,
    )
    if not (is_cuda_available() or is_npu_available() or is_mlu_available()
            or is_musa_available()):  # AmpOptimWrapper's own condition
        return ('--amp: mixed-precision training needs a GPU (or an NPU, MLU or MUSA device) '
                "and none is visible; mmengine's AmpOptimWrapper refuses CPUs. Leave --amp out")
    return None
