"""Scoring: the loop that runs the model's scoring API, and what strategies ask of it."""
from .passes import FeatureDropout, GaussianNoise, HorizontalFlip, ScorePass, build_transform
from .score_loop import (
                         MAIN,
                         NUM_SAMPLES,
                         POSTERIOR_KIND,
                         ScoreLoop,
                         run_pass,
                         run_passes,
                         score_batches,
                         stack_outputs,
)
from .snapshots import SnapshotWeights, find_snapshots

__all__ = ['FeatureDropout', 'GaussianNoise', 'HorizontalFlip', 'MAIN', 'NUM_SAMPLES',
           'POSTERIOR_KIND', 'ScoreLoop', 'ScorePass', 'build_transform', 'run_pass',
           'run_passes', 'score_batches', 'stack_outputs', 'SnapshotWeights',
           'find_snapshots']
