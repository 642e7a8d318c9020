"""A batch for people: the selected samples as tasks, written for their tools.

``batch.json`` is the batch as MMAL knows it (what ingest checks exports
against); ``batch.csv`` ranks it for people who read lists; the tools'
files come from :mod:`.formats`. Every file is written atomically, so a
batch folder is whole or absent.
"""
import copy
import csv
import io
import json
import os.path as osp
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from mmengine.config import Config
from mmengine.registry import DATASETS

from ..datasets.partial import image_size
from ..datasets.pool import leaf_configs, sample_infos
from ..utils.atomic import atomic_write_text
from .formats import FORMATS
from .records import Box, Keypoint, Labels, LabelSpace, Task
from .settings import AnnotationSettings

BATCH_FILE = 'batch.json'
RANKED_FILE = 'batch.csv'


def label_space(cfg, task: str) -> LabelSpace:
    """The classes (detection) or joints (pose) of a config's training data.

    Read from the dataset's own metainfo (built lazily: no annotation is
    loaded), so a config's ``metainfo`` overrides count as in training.
    """
    leaf = copy.deepcopy(leaf_configs(cfg.train_dataloader.dataset)[0])
    leaf.update(pipeline=[], lazy_init=True)
    leaf.pop('indices', None)
    metainfo = DATASETS.build(leaf).metainfo
    if task == 'detection':
        return LabelSpace('detection', tuple(metainfo['classes']))
    names = tuple(metainfo['keypoint_id2name'][i] for i in range(metainfo['num_keypoints']))
    skeleton = tuple(tuple(int(j) for j in link) for link in metainfo['skeleton_links'])
    return LabelSpace('pose', names, skeleton)


def sample_info(info: dict) -> dict:
    """What a task needs from a dataset sample: image, size, person box (pose)."""
    path = info['img_path']
    if 'width' in info and 'height' in info:
        width, height = int(info['width']), int(info['height'])
    else:
        width, height = image_size(path)
    out = dict(image=path, width=width, height=height)
    if 'bbox' in info:  # top-down pose: the person to label, 0-based xyxy
        x1, y1, x2, y2 = (float(v) for v in np.asarray(info['bbox']).reshape(-1)[:4])
        out['person_box'] = [max(0.0, x1), max(0.0, y1), min(float(width), x2),
                             min(float(height), y2)]
    return out


def prediction_labels(task_id: str, prediction, space: LabelSpace, score_thr: float) -> Labels:
    """The model's post-processed prediction (a data sample) as pre-annotation labels."""
    instances = prediction.pred_instances
    if space.task == 'detection':
        boxes = _array(instances.bboxes).reshape(-1, 4)
        scores = _array(instances.scores).reshape(-1)
        labels = _array(instances.labels).reshape(-1).astype(int)
        keep = scores >= score_thr
        return Labels(task_id, 'model', boxes=tuple(
            Box(space.names[c], *(float(v) for v in b), score=float(s))
            for b, s, c in zip(boxes[keep], scores[keep], labels[keep])))
    points = _array(instances.keypoints).reshape(-1, 2)[:len(space.names)]
    scores = _array(instances.keypoint_scores).reshape(-1)[:len(space.names)]
    return Labels(task_id, 'model', keypoints=tuple(
        Keypoint(name, float(x), float(y)) for name, (x, y), s in zip(space.names, points, scores)
        if s >= score_thr))


def _array(value) -> np.ndarray:
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def make_tasks(ids: Sequence[str], infos: Sequence[dict], scores: Sequence[float],
               predictions: Sequence[Labels | None], image_root: str | None) -> list[Task]:
    """Tasks in batch order (rank 1 first); image paths relative to ``image_root`` if given."""
    tasks = []
    for rank, (task_id, info, score, prediction) in enumerate(
            zip(ids, infos, scores, predictions), start=1):
        image = info['image']
        if image_root is not None:
            image = osp.relpath(osp.abspath(image), osp.abspath(image_root))
        person = info.get('person_box')
        tasks.append(Task(task_id, image, info['width'], info['height'], float(score), rank,
                          person_box=Box('person', *person) if person else None,
                          prediction=prediction))
    return tasks


def tasks_of_samples(dataset_cfg: dict, ids: Sequence[str], scores: Sequence[float],
                     predictions: Sequence, space: LabelSpace,
                     settings: AnnotationSettings) -> list[Task]:
    """Tasks of pool samples (ids of ``dataset_cfg``) with the model's predictions."""
    infos = sample_infos(dataset_cfg, ids)
    labels = [prediction_labels(i, p, space, settings.prediction_score_thr)
              for i, p in zip(ids, predictions)]
    return make_tasks(ids, [sample_info(infos[i][1]) for i in ids], scores, labels,
                      settings.image_root)


def write_batch(out_dir: str | Path, tasks: Sequence[Task], space: LabelSpace,
                settings: AnnotationSettings, *, strategy: str, cycle: int | None = None,
                extra: dict | None = None) -> list[Path]:
    """Write ``batch.json``, ``batch.csv`` and each configured tool's files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in settings.formats:
        image_url = (FORMATS[name].local_file_url(settings.image_url_prefix)
                     if name == 'labelstudio' else None)
        written += FORMATS[name].write_tasks(tasks, space, out_dir, image_url=image_url)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(['rank', 'image', 'id', 'score', 'strategy', 'cycle'])
    for t in tasks:
        writer.writerow([t.rank, t.image, t.task_id, repr(t.score), strategy,
                         '' if cycle is None else cycle])
    atomic_write_text(out_dir / RANKED_FILE, buf.getvalue())
    box_level = 'box_level' in (extra or {})
    record = dict(strategy=strategy, cycle=cycle, space=dict(task=space.task, names=space.names),
                  tasks=[task_record(t, box_level) for t in tasks], **(extra or {}))
    atomic_write_text(out_dir / BATCH_FILE, json.dumps(record, indent=1) + '\n')
    return written + [out_dir / RANKED_FILE, out_dir / BATCH_FILE]


def task_record(task: Task, box_level: bool = False) -> dict:
    """A task in ``batch.json``; a box-level task with its question: the asked regions,
    the pseudo-labels shown and the ignore regions (what ingest reads answers against)."""
    record = dict(id=task.task_id, image=task.image, width=task.width, height=task.height,
                  score=task.score, rank=task.rank,
                  person_box=None if task.person_box is None else [
                      task.person_box.x1, task.person_box.y1, task.person_box.x2,
                      task.person_box.y2])
    if box_level:
        record.update(asked=[_box_record(b) for b in task.asked],
                      pseudo=[_box_record(b) for b in (task.prediction.boxes
                                                       if task.prediction else ())],
                      ignored=[_box_record(b) for b in task.ignored])
    return record


def _box_record(box: Box) -> dict:
    return dict(label=box.label, bbox=[box.x1, box.y1, box.x2, box.y2], score=box.score)


def _box_of(record: dict) -> Box:
    return Box(record['label'], *record['bbox'], score=record.get('score'))


def read_batch(folder: str | Path) -> tuple[dict, list[Task]]:
    """``batch.json`` of a batch folder: its record and its tasks (without predictions;
    a box-level batch's tasks with their question: asked regions, pseudo-labels as the
    prediction, ignore regions).

    Raises:
        FileNotFoundError: Naming the folder, when it holds no batch.
    """
    path = Path(folder) / BATCH_FILE
    if not path.exists():
        raise FileNotFoundError(f'{path} not found: {folder} is not a batch written by '
                                'tools/al_query.py or al_train.py --oracle human')
    record = json.loads(path.read_text())
    tasks = [Task(t['id'], t['image'], t['width'], t['height'], t['score'], t['rank'],
                  person_box=Box('person', *t['person_box']) if t.get('person_box') else None,
                  **(_question(t) if 'box_level' in record else {}))
             for t in record['tasks']]
    return record, tasks


def _question(task: dict) -> dict:
    """A box-level task's asked regions, pseudo-labels (as the prediction) and ignore
    regions, from its ``batch.json`` record."""
    return dict(asked=tuple(_box_of(b) for b in task.get('asked', [])),
                ignored=tuple(_box_of(b) for b in task.get('ignored', [])),
                prediction=Labels(task['id'], 'model',
                                  boxes=tuple(_box_of(b) for b in task.get('pseudo', []))))


def append_to_batch(folder: str | Path, tasks: Sequence[Task], space: LabelSpace,
                    strategy: str) -> None:
    """Add tasks to ``batch.json`` (a serving queue's batch grows as it hands out)."""
    path = Path(folder) / BATCH_FILE
    record = json.loads(path.read_text()) if path.exists() else dict(
        strategy=strategy, cycle=None, space=dict(task=space.task, names=space.names), tasks=[])
    known = {t['id'] for t in record['tasks']}
    record['tasks'] += [task_record(t) for t in tasks if t.task_id not in known]
    Path(folder).mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + '\n')


def batch_samples(cfg: Config, batch_dir: Path, record: dict, ids: list[str]) -> dict:
    """``{id: (leaf config, data info)}`` of a query batch's samples, for writing labels.

    Samples of the training dataset are its own. Images named with
    ``--images`` get their labels in the batch folder: VOC XML in
    ``labels/Annotations/`` (detection), the batch's ``persons.json`` (pose).
    """
    source = record.get('candidates_dataset')
    if source is None:
        return sample_infos(cfg.train_dataloader.dataset, ids)
    samples = sample_infos(source, ids)
    if source['type'] == 'UnlabeledImageDataset':
        for _, info in samples.values():
            info['xml_path'] = str(batch_dir / 'labels' / 'Annotations' /
                                   (Path(info['img_path']).stem + '.xml'))
    return samples
