"""People as the oracle: batches for labeling tools, and their labels back.

Flow: the selection's samples become :class:`Task` s with the model's
predictions (:mod:`.batch`), written for Label Studio, CVAT or COCO tools
(:mod:`.formats`); the tools' exports are read back into :class:`Labels`,
merged over annotators (:mod:`.consensus`) and written into the dataset's
own files (:mod:`.dataset_labels`) by :mod:`.ingest`.
"""
from .records import Box, ExportError, Keypoint, Labels, LabelSpace, Task
from .settings import FORMAT_NAMES, AnnotationSettings

__all__ = ['AnnotationSettings', 'Box', 'ExportError', 'FORMAT_NAMES', 'Keypoint', 'LabelSpace',
           'Labels', 'Task']
