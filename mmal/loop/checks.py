"""What an experiment refuses, and when: before any work, or as each cycle starts.

Every check here raises with the key, the numbers and the fix, so a wrong
config stops the run before the first training instead of hours into it.
"""
from mmengine.config import Config
from mmengine.registry import MODELS

from ..datasets import Pool
from ..datasets.dataset_configs import check_data_paths
from ..datasets.label_checks import describe
from ..datasets.pool import find_bad_labels
from ..utils import ConfigError
from ..utils.dist import differences_from_rank0
from ..utils.env import package_versions
from .resume import config_digests
from .settings import ActiveLearningSettings
from .state import digest_ids

#: What an experiment runs: it trains on the first and evaluates with the
#: others (the validation loop is not used).
_REQUIRED_KEYS = ('train_dataloader', 'test_dataloader', 'test_evaluator', 'test_cfg')


def check_experiment_config(cfg: Config) -> None:
    """Refuse a config without what a cycle trains and evaluates with, or missing data."""
    for key in _REQUIRED_KEYS:
        # `test_cfg = dict()` is mmengine's (and mmpose's) spelling of the default loop.
        if cfg.get(key) is None or (key != 'test_cfg' and not cfg.get(key)):
            raise ConfigError(f'the config has no `{key}`; an experiment trains on '
                              'train_dataloader and evaluates with the test loop')
    check_data_paths(cfg, ('train_dataloader', 'test_dataloader'))


def check_labels(cfg: Config, settings: ActiveLearningSettings, pool: Pool, log) -> None:
    """Refuse bad labels in the pool or the test set before any work, listing each,
    or log how many ``active_learning.bad_labels`` drops or clips."""
    found = [('the pool (train_dataloader.dataset)', pool.bad_labels),
             ('the test set (test_dataloader.dataset)',
              find_bad_labels(cfg.test_dataloader.dataset, settings.label_tolerance))]
    text = '\n'.join(describe(problems, where) for where, problems in found if problems)
    if not text:
        return
    if settings.bad_labels == 'refuse':
        raise ConfigError(
            f'{text}\nSuch labels break training (a box of zero size makes SSD\'s loss '
            'infinite). Fix them in the annotation files, or set active_learning.bad_labels '
            "to 'drop' (train without them) or 'clip' (clip them to the image), e.g. "
            '--cfg-options active_learning.bad_labels=drop')
    log(f'{text}\nactive_learning.bad_labels={settings.bad_labels!r}: '
        + ('they are left out while loading' if settings.bad_labels == 'drop' else
           'corners are ordered and boxes and joints clipped to the image while loading; '
           'boxes still empty are left out'))


def model_refusals(cfg: Config, outputs: set[str]) -> dict[str, str] | None:
    """``{output: why not}`` for the score outputs the config's model cannot give; None
    when the model is not one of MMAL's scoring models (it gives none)."""
    model_type = (cfg.get('model') or {}).get('type')
    if not isinstance(model_type, str):
        return None
    with MODELS.switch_scope_and_registry(cfg.get('default_scope')) as registry:
        model_cls = registry.get(model_type)
    if model_cls is None or not hasattr(model_cls, 'output_refusals'):
        return None
    # With the model's config, a wrapper also reads what its head gives (RTMDet's
    # quality scores are no posteriors), so the refusal comes before cycle 0 trains.
    return model_cls.output_refusals(outputs, cfg.model)


def check_model_outputs(cfg: Config, strategy) -> None:
    """Refuse, before any training, a strategy asking for outputs the model cannot give."""
    wanted = {out for passes in (strategy.candidate_passes(), strategy.labeled_passes())
              for p in passes.values() for out in p.outputs}
    refusals = model_refusals(cfg, wanted)
    model_type = (cfg.get('model') or {}).get('type')
    if refusals:
        raise ConfigError(
            f'{type(strategy).__name__} needs the score outputs {sorted(refusals)}, which '
            f'model.type={model_type!r} does not give: '
            + '; '.join(f'{k}: {why}' for k, why in sorted(refusals.items()))
            + '. Choose a strategy that applies to this model (docs/strategies.md, "Model '
            'families") or another model')


def check_same_experiment_on_every_rank(cfg: Config, settings: ActiveLearningSettings,
                                        pool: Pool) -> None:
    """Refuse, on every rank, ranks that would run different experiments (no-op alone).

    Ranks that read other data, another config or other code would score
    different samples or models and silently mix them in one selection.
    A collective: every rank calls it at the same point.
    """
    digest = {'pool (the data under train_dataloader.dataset.data_root)': digest_ids(pool.ids)}
    if settings.oracle == 'human':  # the labels people gave are read from each node's disk
        digest['which samples have labels on disk'] = digest_ids(
            [i for i, labeled in zip(pool.ids, pool.has_labels) if labeled])
    digest.update((f'config key `{k}`', v) for k, v in config_digests(cfg).items())
    digest.update((f'active_learning.{k}', v) for k, v in settings.to_dict().items())
    digest.update((f'{name} version', v) for name, v in package_versions().items())
    differences = differences_from_rank0(digest)
    if differences:
        raise ConfigError(
            'the ranks do not run the same experiment: '
            + '; '.join(f'rank {rank} differs from rank 0 in: {", ".join(keys)}'
                        for rank, keys in differences.items())
            + '. Every node needs the same data, the same config and the same code '
            '(mmal and its packages at the same versions)')


def check_same_labeled_set_on_every_rank(cycle: int, labeled: list[str]) -> None:
    """Refuse, on every rank, a cycle whose labeled set differs between ranks (no-op alone).

    Every rank derives the set from its own copy of the record, the
    broadcast selection and (people as the oracle) the labels on its disk;
    they must agree, and this checks it rather than assume it: a rank
    training on other samples would silently mix another experiment into
    the gradients. A collective: every rank calls it at the start of every
    cycle (which is where the previous one ends), before the set is recorded.
    """
    differences = differences_from_rank0({'labeled set': digest_ids(labeled)})
    if differences:
        raise RuntimeError(
            f'cycle {cycle}: ranks {sorted(differences)} hold another labeled set than rank 0 '
            f'({len(labeled)} samples on this rank); every node must see the same data and '
            'labels under data_root (shared storage), and the same work dir')


def check_disjoint(entry: dict) -> None:
    """Refuse a cycle whose labeled set repeats a sample or holds one it selected."""
    labeled = set(entry['labeled'])
    if len(labeled) != len(entry['labeled']):
        raise RuntimeError(f'cycle {entry["cycle"]}: the labeled set has duplicates')
    overlap = labeled & {p['id'] for p in entry['selected']}
    if overlap:
        raise RuntimeError(f'cycle {entry["cycle"]}: selected samples already labeled: '
                           f'{sorted(overlap)[:5]}')
