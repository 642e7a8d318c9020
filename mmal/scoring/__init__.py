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
from .scorer import SPILL_FOLDER, Scorer, ScoringSettings
from .snapshots import SnapshotWeights, find_snapshots

__all__ = ['FeatureDropout', 'GaussianNoise', 'HorizontalFlip', 'MAIN', 'NUM_SAMPLES',
           'POSTERIOR_KIND', 'SPILL_FOLDER', 'ScoreLoop', 'ScorePass', 'Scorer',
           'ScoringSettings', 'SnapshotWeights', 'build_transform', 'find_snapshots', 'run_pass',
           'run_passes', 'score_batches', 'stack_outputs']
