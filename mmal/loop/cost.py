"""What labels cost, and how a budget in that unit becomes a selection.

``active_learning.cost`` names the unit budgets and curves are counted in:

- ``'images'`` (the default): one per selected sample, an image for
  detection, a person for top-down pose;
- ``'boxes'``: the marks an annotator makes, the boxes of an image for
  detection, the labeled joints of a person for pose;
- ``'seconds'``: a cost model, ``per_image + per_box * marks +
  per_verification * verifications``.

Every cycle records its labeled set's cost in all three units (the state's
``cost`` entry, beside ``num_labeled``), whatever the budget's unit, so any
comparison can be read against any of them.

The seconds model's defaults come from published annotation-time studies;
each is a key to override (``dict(unit='seconds', per_box=34.5)``):

- ``per_box``, detection: 7.0 s, one box by extreme clicking (Papadopoulos
  et al., "Extreme clicking for efficient object annotation", ICCV 2017,
  measured on PASCAL VOC); drawing a box the traditional way took 34.5 s in
  the same paper's reference (Su et al., 2012). Pose: 1.75 s per joint, one
  click, the quarter of that paper's four-click 7.0 s.
- ``per_verification``: 1.6 s, answering whether a shown box is right
  (Papadopoulos et al., "We don't need no bounding-boxes", CVPR 2016).
  Image-level selection asks none; box-level queries count them.
- ``per_image``: 1.0 s to open an image (a person crop) and find what to
  label; no study isolates it, this is an assumption of the order of one
  image-level class label (Bearman et al., "What's the point", ECCV 2016).

A budget in boxes or seconds is spent the way an annotator would: the
strategy's picks are labeled best first, and labeling stops once the
budget is spent; the image that crosses it is finished (its cost counts).
The counts come from the dataset's labels, so a budget other than images
needs the dataset as the oracle: with people, what a sample costs is known
only once it is labeled (the record still counts boxes and seconds of what
they labeled).
"""
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..utils import ConfigError

UNITS = ('images', 'boxes', 'seconds')
#: Seconds per mark of the seconds model, by task (see the module docstring).
PER_BOX_SECONDS = dict(detection=7.0, pose=1.75)
#: How many more picks than the labeled set's average cost suggests a
#: budget in boxes or seconds asks the strategy for, so the walk along its
#: order rarely runs out before the budget is spent.
OVERSAMPLE = 2.0


@dataclass(frozen=True)
class AnnotationCost:
    """The ``active_learning.cost`` setting: a unit and the seconds model.

    Attributes:
        unit (str): ``'images'``, ``'boxes'`` or ``'seconds'``.
        per_image (float): Seconds per image (person) labeled.
        per_box (float): Seconds per box (joint) drawn.
        per_verification (float): Seconds per yes / no answer about a shown box.
    """

    unit: str = 'images'
    per_image: float = 1.0
    per_box: float = PER_BOX_SECONDS['detection']
    per_verification: float = 1.6

    @classmethod
    def from_config(cls, value: str | dict, task: str = 'detection') -> 'AnnotationCost':
        """Read ``active_learning.cost``: a unit name, or a dict with ``unit`` and the
        seconds model's keys.

        Raises:
            ConfigError: Naming the key, the value and the fix.
        """
        key = 'active_learning.cost'
        section = dict(unit=value) if isinstance(value, str) else value
        if not isinstance(section, dict):
            raise ConfigError(f"{key}={value!r} must be one of {UNITS} or a dict, e.g. "
                              "dict(unit='seconds', per_box=34.5)")
        section = dict(section)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f'{key} has unknown keys {unknown}; known keys: {sorted(known)}')
        section.setdefault('per_box', PER_BOX_SECONDS.get(task, PER_BOX_SECONDS['detection']))
        cost = cls(**section)
        if cost.unit not in UNITS:
            raise ConfigError(f"{key}.unit={cost.unit!r} must be one of {UNITS}")
        for name in ('per_image', 'per_box', 'per_verification'):
            seconds = getattr(cost, name)
            if (not isinstance(seconds, (int, float)) or isinstance(seconds, bool)
                    or not math.isfinite(seconds) or seconds < 0):
                raise ConfigError(f'{key}.{name}={seconds!r} must be a number of seconds >= 0')
        return cost

    def to_dict(self) -> dict:
        return asdict(self)

    def of(self, marks: int, verifications: int = 0) -> dict[str, float]:
        """One sample's cost in every unit (``marks``: its boxes or labeled joints)."""
        return dict(images=1.0, boxes=float(marks),
                    seconds=self.per_image + self.per_box * marks
                    + self.per_verification * verifications)

    def total(self, marks: list[int]) -> dict[str, float]:
        """The cost of samples with the given marks, in every unit, rounded for the record."""
        sums = dict(images=0.0, boxes=0.0, seconds=0.0)
        for m in marks:
            for unit, value in self.of(m).items():
                sums[unit] += value
        return {unit: round(value, 3) for unit, value in sums.items()}

    def in_unit(self, marks: list[int]) -> np.ndarray:
        """Each sample's cost in this unit."""
        return np.array([self.of(m)[self.unit] for m in marks], dtype=np.float64)


def picks_to_request(budget: float, labeled_costs: np.ndarray, num_candidates: int) -> int:
    """How many picks to ask the strategy for when the budget is not in images.

    The labeled set's average cost estimates a pick's; the strategy is asked
    for ``OVERSAMPLE`` times what that suggests (all candidates when the
    labeled samples cost nothing in this unit, e.g. empty images in boxes).
    """
    mean = float(np.mean(labeled_costs)) if len(labeled_costs) else 0.0
    if mean <= 0:
        return num_candidates
    return int(min(num_candidates, max(1, math.ceil(OVERSAMPLE * budget / mean))))


def spend(costs: np.ndarray, budget: float) -> int:
    """How many of the picks (best first, each costing ``costs[i]``) the budget labels.

    Labeling stops once the budget is spent; the pick that crosses it is
    finished, so the spent cost may exceed the budget by less than one pick.
    All picks when they cost less than the budget together.
    """
    spent = np.cumsum(np.asarray(costs, dtype=np.float64))
    crossed = np.flatnonzero(spent >= budget)
    return int(crossed[0] + 1) if len(crossed) else len(spent)


def labeled_cost(cycle: dict, unit: str) -> float | None:
    """A recorded cycle's labeled set in ``unit``; None for a record older than the
    cost entry (it counts images only)."""
    if unit == 'images':
        return float(cycle['num_labeled'])
    return (cycle.get('cost') or {}).get(unit)
