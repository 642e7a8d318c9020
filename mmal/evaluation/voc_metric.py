"""mmdet's VOCMetric, printing the dataset's own class names."""
from mmdet.evaluation import VOCMetric
from mmdet.registry import METRICS


@METRICS.register_module()
class ClassNamedVOCMetric(VOCMetric):
    """:class:`mmdet.evaluation.VOCMetric` whose AP table names the dataset's classes.

    mmdet 3.3.0 prints VOC's 20 class names whenever the dataset type is
    ``VOC2007`` / ``VOC2012`` (which mmdet infers from the folder name),
    even when ``metainfo`` overrides the classes: a 5-class dataset's table
    then reads ``aeroplane ... bottle``. The APs themselves are per label and
    correct. For a dataset with other classes this metric hides the VOC
    dataset type while computing, so mmdet's ``eval_map`` takes the class
    names from ``dataset_meta['classes']``; everything else (the 11-point
    or area protocol of ``eval_mode``, legacy coordinates) is unchanged.
    """

    def compute_metrics(self, results: list) -> dict:
        meta = self.dataset_meta
        if not meta or meta.get('dataset_type') not in ('VOC2007', 'VOC2012'):
            return super().compute_metrics(results)
        from mmdet.evaluation.functional import get_classes
        if tuple(meta.get('classes', ())) == tuple(get_classes('voc')):
            return super().compute_metrics(results)
        self._dataset_meta = {**meta, 'dataset_type': None}
        try:
            return super().compute_metrics(results)
        finally:
            self._dataset_meta = meta
