"""An informativeness queue: the unlabeled pool in the current model's order.

The queue hands out the most informative images not handed out yet, takes
back what people settled (accepted: labeled; not settled: back into the
queue), counts the labels that arrived since the model was trained, and
takes a new order when a retrained model has scored the pool again. Images
handed out stay handed out across a re-scoring: nobody's work is thrown
away. Everything lives in ``queue.json``, written atomically after each
change, so a restarted server goes on where it stopped.

Stream-based selective sampling (:class:`StreamThreshold`): an image that
arrives alone is labeled when its score passes a threshold calibrated on
the current pool's scores, so that the expected share of arrivals sent to
people is the chosen rate.
"""
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..utils.atomic import atomic_write_text

QUEUE_FILE = 'queue.json'


class InformativenessQueue:
    """The pool's order, what was handed out and labeled, and the model that scored it.

    Args:
        folder (Path): Where ``queue.json`` lives.
        data (dict): Its content.
    """

    def __init__(self, folder: str | Path, data: dict) -> None:
        self.path = Path(folder) / QUEUE_FILE
        self.data = data

    @classmethod
    def create(cls, folder: str | Path, order: Sequence[str], scores: Mapping[str, float],
               model: str) -> 'InformativenessQueue':
        queue = cls(folder, dict(model=model, generation=0, order=list(order),
                                 scores={i: float(scores[i]) for i in order}, handed_out={},
                                 labeled=[], labels_since_training=0))
        queue.save()
        return queue

    @classmethod
    def load(cls, folder: str | Path) -> 'InformativenessQueue | None':
        path = Path(folder) / QUEUE_FILE
        if not path.exists():
            return None
        try:
            return cls(folder, json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f'{path} is damaged ({err}); it is written atomically, so it was '
                             'changed by hand: restore it or move it away to start the queue '
                             'anew') from err

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + '\n')

    # ----------------------------------------------------------------- queue
    @property
    def waiting(self) -> list[str]:
        """Ids neither labeled nor handed out, most informative first."""
        skip = set(self.data['labeled']) | set(self.data['handed_out'])
        return [i for i in self.data['order'] if i not in skip]

    @property
    def handed_out(self) -> dict[str, float]:
        return dict(self.data['handed_out'])

    def take(self, n: int) -> list[str]:
        """Hand out the next ``n`` most informative images."""
        taken = self.waiting[:n]
        now = time.time()
        self.data['handed_out'].update({i: now for i in taken})
        if taken:
            self.save()
        return taken

    def release(self, ids: Sequence[str]) -> None:
        """Put handed-out images back (the push failed; nobody finished them in time)."""
        for i in ids:
            self.data['handed_out'].pop(i, None)
        if ids:
            self.save()

    def overdue(self, max_age_s: float) -> list[str]:
        """Handed-out images nobody finished within ``max_age_s`` seconds."""
        now = time.time()
        return [i for i, t in self.data['handed_out'].items() if now - t > max_age_s]

    def settle(self, accepted: Sequence[str], requeued: Sequence[str] = ()) -> int:
        """Record labeled images, put unsettled ones back; how many labels are new."""
        labeled = set(self.data['labeled'])
        new = [i for i in accepted if i not in labeled]
        self.data['labeled'] += new
        for i in [*accepted, *requeued]:
            self.data['handed_out'].pop(i, None)
        self.data['labels_since_training'] += len(new)
        if new or requeued:
            self.save()
        return len(new)

    def rescore(self, order: Sequence[str], scores: Mapping[str, float], model: str,
                trained_on: int) -> None:
        """A new model's order of the pool; handed-out and labeled images keep their state.

        ``trained_on``: how many labeled images the model saw; labels that
        arrived while it trained still count towards the next retraining.
        """
        self.data.update(model=model, generation=self.data['generation'] + 1,
                         order=list(order), scores={i: float(scores[i]) for i in order},
                         labels_since_training=len(self.data['labeled']) - trained_on)
        self.save()

    def score(self, sample_id: str) -> float:
        return self.data['scores'][sample_id]


class StreamThreshold:
    """Label an arriving image when its score passes a threshold set on the pool.

    The threshold is the ``1 - rate`` quantile of the current pool's
    scores: if arrivals look like the pool, a share ``rate`` of them goes to
    people. Recalibrate after each re-scoring.

    Args:
        pool_scores: The current model's scores of the unlabeled pool.
        rate: The share of arrivals to label, in (0, 1].
    """

    def __init__(self, pool_scores: Sequence[float], rate: float) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f'rate={rate!r} must be in (0, 1]: the share of arriving images '
                             'to label')
        scores = np.asarray(pool_scores, dtype=np.float64)
        if scores.size == 0:
            raise ValueError('the pool has no scores to calibrate the threshold on')
        self.rate = rate
        self.threshold = float(np.quantile(scores, 1 - rate, method='higher'))

    def wants(self, score: float) -> bool:
        return float(score) >= self.threshold
