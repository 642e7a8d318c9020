"""Labeling tools' file formats: batches written as tasks, exports read as labels.

Each module has the same two functions:

- ``write_tasks(tasks, space, out_dir, *, image_url=None) -> list[Path]``
  writes a batch, with the model's labels as pre-annotations, as the tool
  imports it;
- ``read_export(path, space, tasks) -> (list[Labels], list[ExportError])``
  reads one export of the tool into one :class:`~mmal.annotation.records.Labels`
  per (task, annotator), with an error for each record it could not read.
"""
from . import coco, cvat, labelstudio

#: The formats by the name tools and configs use for them.
FORMATS = {'labelstudio': labelstudio, 'cvat': cvat, 'coco': coco}

__all__ = ['FORMATS', 'coco', 'cvat', 'labelstudio']
