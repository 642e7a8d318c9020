"""The active-learning loop: settings, state, cycles and selection."""
from .experiment import ActiveLearningExperiment, CycleFailedError
from .resume import config_digests
from .settings import ActiveLearningSettings
from .state import ExperimentState

__all__ = ['ActiveLearningExperiment', 'ActiveLearningSettings', 'CycleFailedError',
           'ExperimentState', 'config_digests']
