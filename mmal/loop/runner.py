"""The Runner each phase of a cycle builds."""
import logging

from mmengine.runner import Runner


class CycleRunner(Runner):
    """mmengine's Runner, whose set-up report goes to its log file only.

    A cycle builds up to four Runners (train, evaluate, score, rank);
    mmengine prints the environment, the whole config and the hook table
    while building each, which buries the experiment's one-line-per-phase
    log on the console. Here the console handlers show only warnings until
    the Runner is built; the report still lands in the Runner's own log
    file in the cycle's work dir, and training and testing log as usual.
    """

    def __init__(self, *args, **kwargs) -> None:
        self._quieted: list[tuple[logging.Handler, int]] = []
        try:
            super().__init__(*args, **kwargs)
        finally:
            for handler, level in self._quieted:
                handler.setLevel(level)

    def _log_env(self, env_cfg: dict) -> None:
        # The first call after the logger exists: quiet its console from here.
        for handler in self.logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler):
                self._quieted.append((handler, handler.level))
                handler.setLevel(max(logging.WARNING, handler.level))
        super()._log_env(env_cfg)
