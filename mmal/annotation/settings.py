"""``active_learning.annotation``: how a batch for people is written and taken back."""
from dataclasses import asdict, dataclass, fields

from ..utils import ConfigError

FORMAT_NAMES = ('labelstudio', 'cvat', 'coco')


@dataclass(frozen=True)
class AnnotationSettings:
    """Batches for labeling tools, and how several annotators' labels are merged.

    Attributes:
        formats (tuple[str]): Which tools' files each batch gets, of
            ``'labelstudio'``, ``'cvat'``, ``'coco'``; a ranked ``batch.csv``
            is always written.
        quorum (int): Annotators who must label an image before it counts;
            an image short of it, or whose annotators disagree without a
            majority, goes back into the next batch.
        iou_threshold (float): IoU above which two annotators' boxes are the
            same object when votes are counted.
        image_root (str, optional): Image paths in the batch are written
            relative to this folder (Label Studio's
            ``LOCAL_FILES_DOCUMENT_ROOT``, CVAT's share); None: as the
            dataset gives them.
        image_url_prefix (str): Put before each relative path in Label
            Studio tasks: ``/data/local-files/?d=`` serves local files.
        prediction_score_thr (float): The model's boxes (or joints) with a
            lower score are not offered as pre-annotations.
    """

    formats: tuple[str, ...] = FORMAT_NAMES
    quorum: int = 1
    iou_threshold: float = 0.5
    image_root: str | None = None
    image_url_prefix: str = '/data/local-files/?d='
    prediction_score_thr: float = 0.3

    @classmethod
    def from_dict(cls, section: dict | None) -> 'AnnotationSettings':
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f'active_learning.annotation has unknown keys {unknown}; known '
                              f'keys: {sorted(known)}')
        if 'formats' in section:
            formats = section['formats']
            section['formats'] = (formats,) if isinstance(formats, str) else tuple(formats)
        settings = cls(**section)
        bad = [f for f in settings.formats if f not in FORMAT_NAMES]
        if bad or not settings.formats:
            raise ConfigError(f'active_learning.annotation.formats={settings.formats!r}: '
                              f'choose one or more of {FORMAT_NAMES}')
        if not isinstance(settings.quorum, int) or settings.quorum < 1:
            raise ConfigError(f'active_learning.annotation.quorum={settings.quorum!r} must be '
                              'an integer >= 1')
        for key, low in (('iou_threshold', 0), ('prediction_score_thr', -1)):
            value = getattr(settings, key)
            if not isinstance(value, (int, float)) or not low < value <= 1 or value < 0:
                interval = '(0, 1]' if low == 0 else '[0, 1]'
                raise ConfigError(f'active_learning.annotation.{key}={value!r} must be a '
                                  f'number in {interval}')
        return settings

    def to_dict(self) -> dict:
        return asdict(self)
