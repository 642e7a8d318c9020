"""Exports of labeling tools back into a batch: read, check, merge, decide.

A batch keeps every annotator's labels received so far in
``received.json`` (one entry per task and annotator; a later export of the
same annotator replaces theirs), so exports can arrive in pieces and the
same export ingested twice changes nothing. Each ingest merges what was
received per task (:mod:`.consensus`) and decides: *accepted* (enough
annotators, no unresolved tie), or back to the next batch with the reason.
Writing the accepted labels into the dataset and recording them in the
experiment is :mod:`mmal.loop.human`'s part.
"""
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..utils import ConfigError
from ..utils.atomic import atomic_write_text
from ..utils.config import task_of
from .batch import batch_samples, label_space, read_batch
from .consensus import Consensus, merge
from .dataset_labels import remove_labels, write_labels
from .formats import FORMATS
from .records import Box, ExportError, Keypoint, Labels, LabelSpace, Task
from .settings import AnnotationSettings

RECEIVED_FILE = 'received.json'
REPORT_FILE = 'ingest_report.json'
ON_ERROR = ('skip', 'refuse')


@dataclass
class Decision:
    """What one ingest decided for a batch."""

    accepted: dict[str, Consensus] = field(default_factory=dict)
    #: ``{task id: why it goes back into the next batch}``
    requeued: dict[str, str] = field(default_factory=dict)
    #: The labeled but unsettled tasks among ``requeued`` (short of the quorum, ties).
    unsettled: dict[str, Consensus] = field(default_factory=dict)
    errors: list[ExportError] = field(default_factory=list)
    #: (task, annotator) label sets that this ingest added or changed.
    new_labels: int = 0

    def report(self) -> dict:
        return dict(
            accepted={i: dict(annotators=list(c.annotators), agreement=round(c.agreement, 4),
                              disagreements=c.disagreements) for i, c in self.accepted.items()},
            requeued=self.requeued,
            errors=[str(e) for e in self.errors])


def detect_format(path: Path) -> str:
    """``'cvat'`` for XML, ``'coco'`` for a JSON object with ``images``, else ``'labelstudio'``."""
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as err:
        raise ExportError(path, 'the file', f'cannot be read ({err})', 'give an export '
                          'file of Label Studio (JSON), CVAT (XML) or COCO') from None
    stripped = text.lstrip()
    if stripped.startswith('<'):
        try:
            ET.fromstring(text)
        except ET.ParseError as err:
            raise ExportError(path, 'the file', f'is not well-formed XML ({err})',
                              'export it again from CVAT') from None
        return 'cvat'
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ExportError(path, 'the file', f'is neither XML nor JSON ({err})',
                          'give an export of Label Studio (JSON), CVAT (XML) or COCO (JSON)'
                          ) from None
    return 'coco' if isinstance(data, dict) and 'images' in data else 'labelstudio'


def read_exports(paths: Sequence[str | Path], space: LabelSpace, tasks: Sequence[Task],
                 fmt: str = 'auto') -> tuple[list[Labels], list[ExportError]]:
    """Every export's labels (in file order) and per-record errors.

    Raises:
        ExportError: For a file that is not an export of the format.
    """
    labels, errors = [], []
    for path in map(Path, paths):
        name = detect_format(path) if fmt == 'auto' else fmt
        read, bad = FORMATS[name].read_export(path, space, tasks)
        # An annotator's labels of an image that lost a record are left out
        # whole: without the record they would say the object is not there.
        labels += [lab for lab in read if not any(e.spoils(lab) for e in bad)]
        errors += bad
    return labels, errors


def ingest_batch(batch_dir: str | Path, exports: Sequence[str | Path], space: LabelSpace,
                 settings: AnnotationSettings, *, fmt: str = 'auto', on_error: str = 'skip',
                 other_batches: bool = False) -> Decision:
    """Add the exports' labels to what the batch received, and decide every task.

    Args:
        on_error: ``'skip'`` leaves out the records with errors and takes the
            rest; ``'refuse'`` takes nothing when any record has an error.
        other_batches: The exports also hold other batches' tasks (a
            serving queue's project): those are not errors.

    Raises:
        ExportError: For a file that is not an export; with ``'refuse'``,
            for the first bad record (all are listed in its message).
    """
    if on_error not in ON_ERROR:
        raise ValueError(f'on_error={on_error!r} must be one of {ON_ERROR}')
    batch_dir = Path(batch_dir)
    _, tasks = read_batch(batch_dir)
    labels, errors = read_exports(exports, space, tasks, fmt)
    if other_batches:
        errors = [e for e in errors if not e.outside_batch]
    if errors and on_error == 'refuse':
        first = errors[0]
        raise ExportError(first.path, first.record, first.problem + (
            f' (and {len(errors) - 1} more: ' + '; '.join(map(str, errors[1:])) + ')'
            if len(errors) > 1 else ''), 'fix the export, or ingest with --on-error skip; '
            'nothing was ingested')
    received = _load_received(batch_dir)
    before = dict(received)
    for lab in labels:
        received[(lab.task_id, lab.annotator)] = lab
    decision = decide(tasks, received.values(), space, settings)
    decision.errors = errors
    decision.new_labels = sum(1 for key, lab in received.items() if before.get(key) != lab)
    if decision.new_labels:
        _save_received(batch_dir, received)
    atomic_write_text(batch_dir / REPORT_FILE, json.dumps(decision.report(), indent=1) + '\n')
    return decision


def decide(tasks: Sequence[Task], received, space: LabelSpace,
           settings: AnnotationSettings) -> Decision:
    """Merge each task's labels over annotators; accept it or say why it goes back."""
    by_task: dict[str, list[Labels]] = {}
    for lab in received:
        by_task.setdefault(lab.task_id, []).append(lab)
    decision = Decision()
    for task in tasks:
        labels = by_task.get(task.task_id)
        if not labels:
            decision.requeued[task.task_id] = 'not labeled yet'
            continue
        consensus = merge(labels, space.task, quorum=settings.quorum,
                          iou_threshold=settings.iou_threshold, person_box=task.person_box,
                          joint_names=space.names if space.task == 'pose' else None)
        if consensus.accepted and space.task == 'pose' and not consensus.labels.keypoints:
            # Written, it would read as an unlabeled person (no visible joint).
            decision.requeued[task.task_id] = 'no joint marked by a majority'
            decision.unsettled[task.task_id] = consensus
        elif consensus.accepted:
            decision.accepted[task.task_id] = consensus
        else:
            decision.requeued[task.task_id] = consensus.reason
            decision.unsettled[task.task_id] = consensus
    return decision


def accepted_before(batch_dir: str | Path) -> list[str]:
    """The tasks the batch's last ingest accepted (their labels are in the dataset)."""
    path = Path(batch_dir) / REPORT_FILE
    return list(json.loads(path.read_text())['accepted']) if path.exists() else []


def received_count(batch_dir: str | Path) -> int:
    return len(_load_received(Path(batch_dir)))


def carry_received(source: str | Path, target: str | Path, task_ids: Sequence[str]) -> None:
    """Copy what ``source`` received for ``task_ids`` into ``target``.

    A task that goes back into the next batch keeps its annotators' labels:
    one more annotator breaks a tie, and a quorum counts across batches.
    """
    wanted = set(task_ids)
    carried = {k: v for k, v in _load_received(Path(source)).items() if k[0] in wanted}
    if carried:
        received = _load_received(Path(target))
        received.update(carried)
        _save_received(Path(target), received)


def _load_received(batch_dir: Path) -> dict[tuple[str, str], Labels]:
    path = batch_dir / RECEIVED_FILE
    if not path.exists():
        return {}
    out = {}
    for item in json.loads(path.read_text()):
        lab = Labels(item['task_id'], item['annotator'],
                     boxes=tuple(Box(**b) for b in item['boxes']),
                     keypoints=tuple(Keypoint(**k) for k in item['keypoints']))
        out[(lab.task_id, lab.annotator)] = lab
    return out


def _save_received(batch_dir: Path, received: dict[tuple[str, str], Labels]) -> None:
    items = [asdict(lab) for _, lab in sorted(received.items())]
    atomic_write_text(batch_dir / RECEIVED_FILE, json.dumps(items, indent=1) + '\n')


def ingest_and_write(cfg, batch_dir: str | Path, exports: list, *, fmt: str = 'auto',
                     on_error: str = 'skip', annotation: dict | None = None,
                     other_batches: bool = False) -> tuple['Decision', list[Path]]:
    """Ingest exports into a batch and write its accepted labels; the decision and the files.

    A batch of the experiment, or of ``al_query.py`` over the training
    dataset, writes into the dataset; one over ``--images`` into the batch
    folder (see :func:`mmal.annotation.batch.batch_samples`). Labels of a
    task accepted before and no longer (a new annotator made a tie) are
    removed again. A box-level batch writes nothing here (see
    :func:`mmal.loop.human.ingest_into_experiment` and
    :func:`mmal.service.query.ingest_query_batch`). ``annotation``: the
    settings to decide with (default: the config's).

    Raises:
        ConfigError: When the exports hold no label of this batch at all.
    """
    if annotation is None:
        annotation = (cfg.get('active_learning') or {}).get('annotation')
    settings = AnnotationSettings.from_dict(annotation)
    space = label_space(cfg, task_of(cfg))
    batch_dir = Path(batch_dir)
    record, _ = read_batch(batch_dir)
    before = accepted_before(batch_dir)
    decision = ingest_batch(batch_dir, exports, space, settings, fmt=fmt, on_error=on_error,
                            other_batches=other_batches)
    if not received_count(batch_dir) and not other_batches:
        problems = '; '.join(map(str, decision.errors[:3])) or 'no annotation in them'
        raise ConfigError(f'the exports hold no label of the batch in {batch_dir} ({problems}); '
                          'nothing was ingested. Export the project that labeled this batch')
    if 'box_level' in record:
        # A box-level batch answers regions: its labels go to a box-labels file (the
        # experiment's, mmal.loop.human; the pool's, mmal.service.query), never into the
        # dataset's files, which would read as the image labeled whole.
        return decision, []
    withdrawn = [i for i in before if i not in decision.accepted]
    samples = batch_samples(cfg, batch_dir, record, [*decision.accepted, *withdrawn])
    changed = write_labels({i: c.labels for i, c in decision.accepted.items()}, samples, space)
    changed += remove_labels(withdrawn, samples, space)
    return decision, changed
