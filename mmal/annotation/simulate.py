"""Stand-in annotators, for trying the loop with people on generated data.

:func:`hide_labels` turns a generated dataset into what a user with people
as the oracle has: a few labeled training samples, the rest unlabeled, and
keeps the hidden labels aside as *answers*. :func:`labelstudio_export`
answers a batch as Label Studio's JSON export does, one annotation per
simulated annotator, optionally with mistakes (a box-level batch answered as
:func:`box_level_answer` says), so ``al_ingest.py`` and
``al_train.py --oracle human --resume`` can run end to end without people.
Never used by the loop itself. From the command line::

    python -m mmal.annotation.simulate BATCH_DIR ANSWERS_DIR --annotators a@x b@x --out export.json
"""
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..datasets.mpii_format import MPII_JOINTS
from ..utils.boxes import pairwise_iou
from .batch import read_batch
from .records import Task

ANSWERS = 'answers'


def hide_labels(root: str | Path, task: str, keep: int, seed: int = 0) -> Path:
    """Hide the training labels of a generated dataset but ``keep`` random samples.

    Detection (a ``VOCdevkit`` folder): the trainval XMLs of the hidden
    images move to ``ROOT/answers/Annotations``. Pose (an MPII folder): the
    hidden persons of ``annotations/mpii_train.json`` lose their joints,
    which ``ROOT/answers/mpii_train.json`` keeps. Test labels stay.

    Returns:
        Path: The answers folder.
    """
    root = Path(root)
    answers = root / ANSWERS
    if answers.exists():
        raise FileExistsError(f'{answers} exists: the labels of {root} are already hidden')
    rng = np.random.default_rng(seed)
    if task == 'detection':
        names = (root / 'VOC2007/ImageSets/Main/trainval.txt').read_text().split()
        hidden = [names[i] for i in sorted(rng.permutation(len(names))[keep:])]
        (answers / 'Annotations').mkdir(parents=True)
        for name in hidden:
            shutil.move(root / f'VOC2007/Annotations/{name}.xml',
                        answers / 'Annotations' / f'{name}.xml')
        return answers
    ann_file = root / 'annotations/mpii_train.json'
    records = json.loads(ann_file.read_text())
    answers.mkdir()
    shutil.copy(ann_file, answers / 'mpii_train.json')
    for i in rng.permutation(len(records))[keep:]:
        records[i]['joints'] = [[-1.0, -1.0]] * len(MPII_JOINTS)
        records[i]['joints_vis'] = [0] * len(MPII_JOINTS)
    ann_file.write_text(json.dumps(records, indent=4))
    return answers


def answer_boxes(answers: Path, task_id: str) -> list[tuple[str, float, float, float, float]]:
    """The hidden VOC boxes of an image, 0-based ``(label, x1, y1, x2, y2)``."""
    xml = Path(answers) / 'Annotations' / f'{Path(task_id).name}.xml'
    out = []
    for obj in ET.parse(xml).getroot().findall('object'):
        b = obj.find('bndbox')
        x1, y1, x2, y2 = (float(b.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
        out.append((obj.find('name').text, x1 - 1, y1 - 1, x2, y2))
    return out


def answer_joints(answers: Path, task_id: str) -> dict[str, tuple[float, float]]:
    """The hidden joints of a person, 0-based ``{joint: (x, y)}`` of the visible ones."""
    image, _, k = task_id.rpartition('/')[2].partition('#')
    records = [r for r in json.loads((Path(answers) / 'mpii_train.json').read_text())
               if r['image'].split('.')[0] == image]
    record = records[int(k or 0)]
    return {name: (x - 1, y - 1) for name, (x, y), v in
            zip(MPII_JOINTS, record['joints'], record['joints_vis']) if v}


def labelstudio_export(batch_dir: str | Path, answers: str | Path, annotators: Sequence[str],
                       *, mistakes: dict[str, dict] | None = None) -> list[dict]:
    """The batch answered by ``annotators``, as Label Studio exports it.

    Args:
        mistakes: ``{task id: {annotator: label}}``: that annotator gives
            every box of the task that label (detection), or shifts every
            joint by 40 pixels (pose, any value).
    """
    record, tasks = read_batch(batch_dir)
    pose = record['space']['task'] == 'pose'
    mistakes = mistakes or {}
    exported = []
    for n, task in enumerate(tasks):
        annotations = []
        for a, who in enumerate(annotators):
            wrong = mistakes.get(task.task_id, {}).get(who)
            if pose:
                result = _joints(task, answer_joints(Path(answers), task.task_id), wrong)
            elif 'box_level' in record:
                truth = answer_boxes(Path(answers), task.task_id)
                result = _boxes(task, box_level_answer(
                    task, truth, record['box_level']['oracle_iou']), wrong) + _asked(task)
            else:
                result = _boxes(task, answer_boxes(Path(answers), task.task_id), wrong)
            annotations.append(dict(id=100 * n + a, completed_by=dict(id=a + 1, email=who),
                                    result=result, was_cancelled=False, ground_truth=False))
        exported.append(dict(id=n + 1, annotations=annotations, predictions=[],
                             data=dict(mmal_id=task.task_id, image=task.image)))
    return exported


def _boxes(task: Task, boxes, wrong: str | None) -> list[dict]:
    return [dict(id=f'r{i}', from_name='label', to_name='image', type='rectanglelabels',
                 original_width=task.width, original_height=task.height, image_rotation=0,
                 value=dict(x=100 * x1 / task.width, y=100 * y1 / task.height,
                            width=100 * (x2 - x1) / task.width,
                            height=100 * (y2 - y1) / task.height, rotation=0,
                            rectanglelabels=[wrong or label]))
            for i, (label, x1, y1, x2, y2) in enumerate(boxes)]


def box_level_answer(task: Task, truth, oracle_iou: float = 0.5) -> list[tuple]:
    """What a careful annotator leaves on a box-level task's image, ``(label, x1, y1, x2,
    y2)`` each: a pseudo-label on a true object of its class kept as it is (the model's
    box), one on an object of another class corrected to the object, one on nothing
    deleted; each asked region on an object answered with the object's box and class, the
    others left ("nothing here"); no object drawn beyond those (each object once)."""
    pseudo = list(task.prediction.boxes) if task.prediction else []
    regions = pseudo + list(task.asked)
    truth = list(truth)
    if not regions or not truth:
        return []
    iou = np.asarray(pairwise_iou([[b.x1, b.y1, b.x2, b.y2] for b in regions],
                                  [t[1:] for t in truth]), dtype=np.float64)
    out, used = [], set()
    for r, region in enumerate(regions):  # pseudo-labels first: they are on screen
        order = [int(j) for j in np.argsort(-iou[r], kind='stable')
                 if iou[r, j] >= oracle_iou and int(j) not in used]
        if not order:
            continue
        used.add(order[0])
        obj = truth[order[0]]
        if r < len(pseudo) and region.label == obj[0]:
            out.append((region.label, region.x1, region.y1, region.x2, region.y2))
        else:
            out.append(tuple(obj))
    return out


def _asked(task: Task) -> list[dict]:
    """The asked regions as Label Studio keeps them in an annotation (the prediction's)."""
    return [dict(id=f'asked{i}', from_name='asked', to_name='image', type='rectanglelabels',
                 original_width=task.width, original_height=task.height, image_rotation=0,
                 value=dict(x=100 * b.x1 / task.width, y=100 * b.y1 / task.height,
                            width=100 * (b.x2 - b.x1) / task.width,
                            height=100 * (b.y2 - b.y1) / task.height, rotation=0,
                            rectanglelabels=['asked_region']))
            for i, b in enumerate(task.asked)]


def _joints(task: Task, joints: dict, wrong) -> list[dict]:
    shift = 40.0 if wrong else 0.0
    return [dict(id=f'k{i}', from_name='keypoints', to_name='image', type='keypointlabels',
                 original_width=task.width, original_height=task.height, image_rotation=0,
                 value=dict(x=100 * min(x + shift, task.width - 1) / task.width,
                            y=100 * y / task.height, width=0.5, keypointlabels=[name]))
            for i, (name, (x, y)) in enumerate(joints.items())]


def main() -> int:
    import argparse
    parser = argparse.ArgumentParser(description='Answer a batch as Label Studio exports it, '
                                     'from the labels hide_labels kept aside.')
    parser.add_argument('batch', help='the batch folder (holds batch.json)')
    parser.add_argument('answers', help='the answers folder of hide_labels')
    parser.add_argument('--annotators', nargs='+', default=['annotator@example.com'])
    parser.add_argument('--out', required=True, help='the export file to write')
    args = parser.parse_args()
    exported = labelstudio_export(args.batch, args.answers, args.annotators)
    Path(args.out).write_text(json.dumps(exported, indent=1))
    print(f'{args.out}: {len(exported)} tasks labeled by {", ".join(args.annotators)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
