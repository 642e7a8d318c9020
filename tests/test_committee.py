"""Query by committee: disagreement measures on hand-built committees, and snapshot committees.

The measures are checked on inputs whose answer is known; the snapshot
pass is checked to load each checkpoint's own weights, once, and to put
the model's weights back.
"""
import copy
import csv
import math

import numpy as np
import pytest
import torch

from mmal.registry import STRATEGIES
from mmal.scoring import ScorePass, SnapshotWeights, find_snapshots, score_batches
from mmal.strategies.query_by_committee import match_boxes

from .cycles import one_epoch_two_cycles, run_and_check_selection
from .test_learning_loss_detector import batch, build

MEASURES = ('vote_entropy', 'kl_to_mean')


def qbc(task='detection', **kw):
    kw.setdefault('members', 2)
    return STRATEGIES.build(dict(type='QueryByCommitteeStrategy', **kw),
                            default_args=dict(task=task))


def detection(images, kind='softmax'):
    """Candidate outputs from per image a list of members' (posteriors, boxes)."""
    return dict(num_samples=len(images), posterior_kind=kind,
                posteriors=[[np.asarray(p, dtype=np.float32) for p, _ in members]
                            for members in images],
                boxes=[[np.asarray(b, dtype=np.float32).reshape(-1, 4) for _, b in members]
                       for members in images])


BOXES = [[0, 0, 10, 10], [20, 20, 40, 40], [50, 0, 60, 30]]
SURE = [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]        # C = 2, background last
SWAPPED = [[0.05, 0.9, 0.05], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]     # box 0 votes class 1


# ------------------------------------------------------------------ measures
@pytest.mark.parametrize('measure', MEASURES)
@pytest.mark.parametrize('kind', ['softmax', 'sigmoid'])
def test_identical_members_disagree_by_zero(measure, kind):
    strategy = qbc(members=3, measure=measure, aggregation='sum')
    scores = strategy.scores(detection([[(SURE, BOXES)] * 3], kind), {})
    assert scores == pytest.approx([0.0], abs=1e-9)
    pose = qbc('pose', members=3, measure=measure, aggregation='sum')
    maps = np.random.default_rng(0).random((1, 1, 4, 8, 8))
    assert pose.scores(dict(num_samples=1, heatmaps=np.repeat(maps, 3, axis=1)), {}) == \
        pytest.approx([0.0], abs=1e-9)


def test_members_voting_differently_score_higher_with_known_values():
    out = detection([[(SURE, BOXES), (SURE, BOXES)], [(SURE, BOXES), (SWAPPED, BOXES)]])
    votes = qbc(measure='vote_entropy').scores(out, {})
    # two members split 1:1: log 2 / log min(M=2, n=3) = 1
    assert votes == pytest.approx([0.0, 1.0])
    kl = qbc(measure='kl_to_mean').scores(out, {})
    mean = (np.array(SURE[0]) + np.array(SWAPPED[0])) / 2
    expected = 0.5 * sum(np.sum(p * np.log(p / mean)) for p in (SURE[0], SWAPPED[0]))
    assert kl == pytest.approx([0.0, expected / math.log(2)])
    # KL sees a shift of belief the votes do not: same argmax, different posteriors
    softer = [[0.5, 0.25, 0.25], *SURE[1:]]
    out = detection([[(SURE, BOXES), (softer, BOXES)]])
    assert qbc(measure='vote_entropy').scores(out, {}) == pytest.approx([0.0])
    assert qbc(measure='kl_to_mean').scores(out, {})[0] > 0.01


def test_more_split_votes_score_higher_and_aggregation_is_over_boxes():
    one_hot = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    box = [[0, 0, 10, 10]]
    two_way = [[(one_hot[0:1], box), (one_hot[0:1], box), (one_hot[1:2], box)]]
    three_way = [[(one_hot[0:1], box), (one_hot[1:2], box), (one_hot[2:3], box)]]
    for measure in MEASURES:
        scores = qbc(members=3, measure=measure).scores(detection([two_way[0], three_way[0]]),
                                                        {})
        assert scores[1] == pytest.approx(1.0) and 0 < scores[0] < scores[1]
    two = [[(SURE, BOXES), (SWAPPED, BOXES)]]
    by = {how: qbc(measure='vote_entropy', aggregation=how).scores(detection(two), {})[0]
          for how in ('max', 'mean', 'sum')}
    assert by == pytest.approx(dict(max=1.0, mean=1 / 3, sum=1.0))


def test_sigmoid_heads_read_each_class_as_a_binary_decision():
    # C = 3 classes; member 2 flips class 0 only: one binary split of three
    p1 = [[0.9, 0.1, 0.2, 0.0]]
    p2 = [[0.1, 0.1, 0.2, 0.0]]
    out = detection([[(p1, BOXES[:1]), (p2, BOXES[:1])]], kind='sigmoid')
    assert qbc(measure='vote_entropy').scores(out, {}) == pytest.approx([1 / 3])
    kl = qbc(measure='kl_to_mean').scores(out, {})[0]
    expected = 0.5 * sum(p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
                         for p in (0.9, 0.1))
    assert kl == pytest.approx(expected / (3 * math.log(2)))


# ------------------------------------------------------------------ matching
def test_a_members_boxes_permuted_still_match():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=6)
    corners = rng.uniform(0, 100, size=(6, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 20, size=(6, 2))], axis=1)
    perm = rng.permutation(6)
    for measure in MEASURES:
        strategy = qbc(measure=measure, aggregation='sum')
        same = strategy.scores(detection([[(probs, boxes), (probs[perm], boxes[perm])]]), {})
        assert same == pytest.approx([0.0], abs=1e-9)
    groups = match_boxes([boxes, boxes[perm]], [probs[:, :-1].max(1)] * 2, 0.5)
    assert len(groups) == 6 and (perm[groups[:, 1]] == groups[:, 0]).all()
    # a slightly moved box still matches; a far one does not
    shifted = boxes[perm] + 1.0
    assert len(match_boxes([boxes, shifted], [probs[:, :-1].max(1)] * 2, 0.5)) == 6
    far = boxes + 200.0
    assert len(match_boxes([boxes, far], [probs[:, :-1].max(1)] * 2, 0.5)) == 12


def test_greedy_matching_gives_the_overlap_to_the_more_confident_box():
    ref = np.array([[0, 0, 10, 10], [0, 0, 10, 12]], dtype=float)
    other = np.array([[0, 0, 10, 10]], dtype=float)
    groups = match_boxes([ref, other], [np.array([0.9, 0.5]), np.array([0.7])], 0.5)
    assert groups.tolist() == [[0, 0], [1, -1]]


def test_unmatched_boxes_vote_background():
    sure = [[0.9, 0.05, 0.05]]
    out = detection([[(sure, BOXES[:1]), (np.zeros((0, 3)), np.zeros((0, 4)))]])
    assert qbc(measure='vote_entropy').scores(out, {}) == pytest.approx([1.0])
    mean = np.array([0.45, 0.025, 0.525])
    kl = 0.5 * (np.sum(np.array(sure[0]) * np.log(sure[0] / mean)) + math.log(1 / 0.525))
    assert qbc(measure='kl_to_mean').scores(out, {}) == pytest.approx([kl / math.log(2)])
    # a box both members see, and one only the second sees, far away
    out = detection([[(SURE[:1], BOXES[:1]), (SURE[:2], BOXES[:2])]])
    per_box = qbc(measure='vote_entropy', aggregation='mean').scores(out, {})
    assert per_box == pytest.approx([0.5])           # (0 + 1) / 2 groups
    # no member sees anything: the committee agrees
    empty = (np.zeros((0, 3)), np.zeros((0, 4)))
    assert qbc().scores(detection([[empty, empty]]), {}) == pytest.approx([0.0])
    assert qbc(empty_score=1.0).scores(detection([[empty, empty]]), {}) == [1.0]


# ---------------------------------------------------------------------- pose
def test_pose_votes_are_binned_peaks_and_kl_compares_heatmaps():
    maps = np.zeros((3, 2, 2, 8, 8))       # instances, members, joints
    maps[:, :, :, 2, 2] = 1.0
    maps[1, 1, 0, 2, 2], maps[1, 1, 0, 3, 3] = 0.0, 1.0    # same 2x2 cell as (2, 2)
    maps[2, 1, 0, 2, 2], maps[2, 1, 0, 6, 6] = 0.0, 1.0    # another cell
    out = dict(num_samples=3, heatmaps=maps)
    votes = qbc('pose', measure='vote_entropy', aggregation='max').scores(out, {})
    assert votes == pytest.approx([0.0, 0.0, 1.0])
    assert qbc('pose', measure='vote_entropy', vote_cell=1).scores(out, {}) == \
        pytest.approx([0.0, 1.0, 1.0])
    kl = qbc('pose', measure='kl_to_mean', aggregation='max').scores(out, {})
    assert kl == pytest.approx([0.0, 1.0, 1.0])      # disjoint peaks: log 2 / log 2
    mean_kl = qbc('pose', measure='kl_to_mean', aggregation='mean').scores(out, {})
    assert mean_kl == pytest.approx([0.0, 0.5, 0.5])  # one of two joints
    # a member that places the joint nowhere votes apart
    maps[0, 1, 0] = 0.0
    assert qbc('pose', measure='vote_entropy').scores(out, {})[0] == pytest.approx(1.0)


# ------------------------------------------------------------------- config
@pytest.mark.parametrize('change, match', [
    (dict(committee='bagging'), 'committee='),
    (dict(members=1), 'members=1 must be an integer >= 2'),
    (dict(dropout=0.0), 'dropout=0 gives identical'),
    (dict(measure='margin'), 'measure='),
    (dict(aggregation='median'), 'aggregation='),
    (dict(iou_threshold=0.0), 'iou_threshold='),
    (dict(vote_cell=0), 'vote_cell='),
])
def test_bad_arguments_name_the_key(change, match):
    with pytest.raises(ValueError, match=match):
        qbc(**change)


def test_the_committee_is_a_scoring_pass():
    mc = qbc(members=4, dropout=0.3).candidate_passes()['main']
    assert (mc.members, mc.dropout, mc.snapshots) == (4, 0.3, 0)
    assert mc.outputs == ('posteriors', 'boxes')
    snap = qbc('pose', committee='snapshots', members=3).candidate_passes()['main']
    assert (snap.members, snap.dropout, snap.snapshots) == (3, 0.0, 3)
    assert snap.outputs == ('heatmaps',)
    with pytest.raises(ValueError, match='snapshots=1 must be 0'):
        ScorePass(('heatmaps',), snapshots=1)
    with pytest.raises(ValueError, match='members=2 with snapshots=3'):
        ScorePass(('heatmaps',), members=2, snapshots=3)
    with pytest.raises(ValueError, match='committee members, expected 2'):
        qbc().scores(detection([[(SURE, BOXES)] * 3]), {})


# ---------------------------------------------------------------- snapshots
def save_checkpoints(model, folder, *states):
    folder.mkdir(parents=True, exist_ok=True)
    for epoch, state in enumerate(states, start=1):
        torch.save(dict(meta=dict(epoch=epoch), state_dict=state), folder / f'epoch_{epoch}.pth')


def perturbed(model, seed):
    """A state dict of ``model`` with the detection head's weights moved."""
    state = copy.deepcopy(model.state_dict())
    generator = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.startswith('task_model.bbox_head') and value.is_floating_point():
            state[key] = value + 0.5 * torch.randn(value.shape, generator=generator)
    return state


@pytest.fixture
def ssd(tiny_cfg):
    model = build(tiny_cfg).eval()
    model.score_cfg = dict(num_boxes=10, score_thr=0.0)
    return model, batch(tiny_cfg, 2)


def test_snapshot_members_have_their_checkpoints_weights(ssd, tmp_path):
    model, data = ssd
    own = copy.deepcopy(model.state_dict())
    first, second = perturbed(model, 1), perturbed(model, 2)
    save_checkpoints(model, tmp_path / 'two', first, second)
    passes = dict(main=ScorePass(('posteriors', 'boxes'), snapshots=2), plain=ScorePass(
        ('posteriors',)))
    out = score_batches(model, [copy.deepcopy(data)], passes, snapshots=tmp_path / 'two')
    assert out['posteriors'].shape == (2, 2, 10, 6)
    assert not np.allclose(out['posteriors'][:, 0], out['posteriors'][:, 1])
    # member m is the model with checkpoint m's weights; the other pass and
    # the model afterwards have the model's own weights
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, own[key])
    ref = score_batches(model, [copy.deepcopy(data)], dict(main=ScorePass(('posteriors',))))
    np.testing.assert_array_equal(out['plain/posteriors'], ref['posteriors'])
    for m, state in enumerate((first, second)):
        model.load_state_dict(state)
        ref = score_batches(model, [copy.deepcopy(data)], dict(main=ScorePass(('posteriors',))))
        np.testing.assert_allclose(out['posteriors'][:, m], ref['posteriors'], atol=1e-6)
    model.load_state_dict(own)
    assert qbc_scores(out).min() > 0

    # one checkpoint repeated: the members agree exactly
    save_checkpoints(model, tmp_path / 'same', first, first)
    out = score_batches(model, [copy.deepcopy(data)], passes, snapshots=tmp_path / 'same')
    np.testing.assert_array_equal(out['posteriors'][:, 0], out['posteriors'][:, 1])
    assert qbc_scores(out) == pytest.approx([0.0, 0.0], abs=1e-9)


def qbc_scores(out):
    return qbc(committee='snapshots', measure='kl_to_mean').scores(out, {})


def test_each_snapshot_is_read_once_and_swapped_per_batch(ssd, tmp_path, monkeypatch):
    import mmal.scoring.snapshots as snapshots
    model, data = ssd
    save_checkpoints(model, tmp_path, perturbed(model, 1), perturbed(model, 2))
    reads = []
    real = snapshots.load_checkpoint
    monkeypatch.setattr(snapshots, 'load_checkpoint',
                        lambda m, path, **kw: reads.append(path) or real(m, path, **kw))
    passes = dict(main=ScorePass(('posteriors',), snapshots=2))
    out = score_batches(model, [copy.deepcopy(data)] * 3, passes, snapshots=tmp_path)
    assert len(reads) == 2 and out['num_samples'] == 6
    # each batch ran the same two snapshots: the same members on the same images
    np.testing.assert_allclose(out['posteriors'][0], out['posteriors'][2], atol=1e-6)


def test_the_last_checkpoints_are_the_snapshots_and_too_few_are_refused(tmp_path):
    for name in ('epoch_1.pth', 'epoch_2.pth', 'epoch_10.pth', 'iter_500.pth', 'best.pth'):
        (tmp_path / name).write_bytes(b'')
    assert [p.name for p in find_snapshots(tmp_path, 2)] == ['epoch_2.pth', 'epoch_10.pth']
    assert [p.name for p in find_snapshots(tmp_path, 2, upto=tmp_path / 'epoch_2.pth')] == \
        ['epoch_1.pth', 'epoch_2.pth']
    with pytest.raises(ValueError, match=r'holds 3 \(epoch_1.pth, epoch_2.pth, epoch_10.pth\)'
                       r'.*default_hooks.checkpoint.*interval=1, max_keep_ckpts=4'):
        find_snapshots(tmp_path, 4)
    with pytest.raises(ValueError, match='holds 0 .*max_keep_ckpts=2'):
        find_snapshots(tmp_path / 'nothing', 2)


def test_the_score_runner_finds_the_snapshots_beside_its_checkpoint(tiny_cfg, tmp_path):
    from .test_score_loop import score_runner
    model = build(tiny_cfg)
    folder = tmp_path / 'trained'
    first, second = perturbed(model, 1), perturbed(model, 2)
    save_checkpoints(model, folder, first, second)
    cfg = copy.deepcopy(tiny_cfg)
    cfg.load_from = str(folder / 'epoch_2.pth')
    passes = dict(main=dict(outputs=('posteriors',), snapshots=2))
    runner, _ = score_runner(cfg, tmp_path / 'work', [0, 1, 2, 3], passes)
    out = runner.test()
    assert out['posteriors'][0].shape[0] == 2
    assert not np.allclose(out['posteriors'][0][0], out['posteriors'][0][1])
    for key, value in runner.model.state_dict().items():        # load_from's weights back
        torch.testing.assert_close(value, second[key])

    cfg.load_from = str(folder / 'epoch_1.pth')   # only one checkpoint up to it
    runner, _ = score_runner(cfg, tmp_path / 'work2', [0, 1], passes)
    with pytest.raises(ValueError, match='holds 1 .*max_keep_ckpts=2'):
        runner.test()


def test_snapshot_weights_restore_even_when_a_checkpoint_is_wrong(ssd, tmp_path):
    model, _ = ssd
    own = copy.deepcopy(model.state_dict())
    good = perturbed(model, 1)
    bad = {k: v for k, v in good.items() if 'loss_prediction' not in k}
    save_checkpoints(model, tmp_path, good, bad)
    with pytest.raises(RuntimeError, match='(?s)epoch_2.pth is not a checkpoint of the scored '
                       'model.*missing keys'):
        SnapshotWeights(model, find_snapshots(tmp_path, 2))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, own[key])


# --------------------------------------------------------------- real cycles
STRATEGIES_PER_TASK = {
    'detection': [dict(type='QueryByCommitteeStrategy', members=3, measure='kl_to_mean'),
                  dict(type='QueryByCommitteeStrategy', committee='snapshots', members=2,
                       measure='vote_entropy', aggregation='sum')],
    'pose': [dict(type='QueryByCommitteeStrategy', members=3, aggregation='mean')],
}


def check_cycle(cfg, tmp_path, strategy):
    cfg.active_learning.strategy = strategy
    c0, c1, picked = run_and_check_selection(cfg, tmp_path)
    assert c1['labeled'] == c0['labeled'] + picked
    with open(tmp_path / 'cycle_00' / 'al_scores.csv') as f:
        scores = {r['id']: float(r['score']) for r in csv.DictReader(f)}
    assert len(scores) == 24 and all(math.isfinite(v) and v >= 0 for v in scores.values())
    assert min(p['score'] for p in c0['selected']) >= sorted(scores.values())[-8]
    return c1, scores


@pytest.mark.slow
@pytest.mark.parametrize('strategy', STRATEGIES_PER_TASK['detection'],
                         ids=lambda s: s.get('committee', 'dropout'))
def test_detection_committee_runs_a_real_cycle(tiny_cfg, tmp_path, strategy):
    cfg = one_epoch_two_cycles(copy.deepcopy(tiny_cfg))
    if strategy.get('committee') == 'snapshots':
        cfg.train_cfg.max_epochs = 2
        cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1, max_keep_ckpts=2)
    c1, scores = check_cycle(cfg, tmp_path, strategy)
    assert 'pascal_voc/mAP' in c1['metrics']
    assert len(set(scores.values())) > 1       # the committee disagrees on some images


@pytest.mark.slow
def test_snapshot_committee_without_enough_checkpoints_names_the_setting(tiny_cfg, tmp_path):
    from mmal.loop import ActiveLearningExperiment
    cfg = one_epoch_two_cycles(copy.deepcopy(tiny_cfg))   # keeps one checkpoint
    cfg.active_learning.strategy = dict(type='QueryByCommitteeStrategy',
                                        committee='snapshots', members=2)
    # refused when the experiment is built, before cycle 0 trains
    with pytest.raises(ValueError, match=r'max_keep_ckpts=1; set default_hooks.checkpoint = '
                                         r".*max_keep_ckpts=2"):
        ActiveLearningExperiment(cfg, str(tmp_path))
    assert not (tmp_path / 'cycle_00').exists()


@pytest.mark.slow
def test_pose_committee_runs_a_real_cycle(pose_cfg, tmp_path):
    cfg = one_epoch_two_cycles(copy.deepcopy(pose_cfg))
    c1, scores = check_cycle(cfg, tmp_path, STRATEGIES_PER_TASK['pose'][0])
    assert 'PCK' in c1['metrics']
    assert len(set(scores.values())) > 1


def test_a_snapshot_committee_is_refused_before_training_when_too_few_checkpoints_are_kept():
    from mmengine.config import Config

    from mmal.utils import ConfigError
    strategy = STRATEGIES.build(dict(type='QueryByCommitteeStrategy', committee='snapshots',
                                     members=3), default_args=dict(task='detection'))
    cfg = Config(dict(default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                                         max_keep_ckpts=1)),
                      train_cfg=dict(max_epochs=10)))
    with pytest.raises(ConfigError, match=r'max_keep_ckpts=1; set default_hooks.checkpoint'):
        strategy.check_config(cfg)
    cfg.default_hooks.checkpoint.max_keep_ckpts = 3
    cfg.default_hooks.checkpoint.interval = 5
    with pytest.raises(ConfigError, match=r'training saves 2 .*interval=5'):
        strategy.check_config(cfg)
    cfg.default_hooks.checkpoint.interval = 2
    strategy.check_config(cfg)  # 5 checkpoints saved, 3 kept
    STRATEGIES.build(dict(type='QueryByCommitteeStrategy'),
                     default_args=dict(task='detection')).check_config(Config(dict()))
