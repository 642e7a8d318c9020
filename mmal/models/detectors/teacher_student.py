"""Learning Loss around mmdet's teacher-student pairs (semi-supervised training).

mmdet's :class:`SemiBaseDetector` (``SoftTeacher``) holds a student and a
teacher, the teacher a moving average of the student (``MeanTeacherHook``),
and trains the student on a labeled branch and a pseudo-labeled one. The
Learning Loss wrapper around such a pair reads one member at a time
(:meth:`~mmal.models.LearningLossModel.members`): training reads the
student, scoring the ``score_on`` member. The loss-prediction module is
the wrapper's, outside the pair, so the moving average never touches it,
and it is trained on the student's features and its *labeled* losses only
(:meth:`TeacherStudentMixin.loss`): pseudo-labels never reach the ranking
loss.

Both detector wrappers mix this in: :class:`LearningLossTwoStageDetector`
around ``SoftTeacher`` (which calls the RPN and the RoI head, so two-stage
only), :class:`LearningLossDetector` around mmdet's plain mean teacher
(``SemiBaseDetector``: the teacher's detections above ``cls_pseudo_thr``
train the student). mmdet issue 10223: the mean teacher with RTMDet
predicts nothing; it was checked here with RetinaNet only.
"""
from collections.abc import Sequence

from mmdet.models.detectors import SemiBaseDetector
from mmdet.models.utils import rename_loss_dict, reweight_loss_dict
from torch import Tensor, nn

from ..replay import patched

#: The members of a teacher-student pair that ``score_on`` can name.
SCORE_ON = ('student', 'teacher')


def check_score_on(task_model: nn.Module, score_on: str) -> str:
    """``score_on`` if it names a member of ``task_model``'s pair, else a ValueError."""
    if score_on not in SCORE_ON:
        raise ValueError(f'model.score_on={score_on!r} must be one of {SCORE_ON}')
    if score_on != 'student' and not isinstance(task_model, SemiBaseDetector):
        raise ValueError(f'model.score_on={score_on!r} names a member of a teacher-student '
                         f'pair, and {type(task_model).__name__} is a single model: remove '
                         'model.score_on (or make the detector a SemiBaseDetector such as '
                         'SoftTeacher)')
    return score_on


class TeacherStudentMixin:
    """Lets a Learning Loss detector wrapper take a :class:`SemiBaseDetector` as its task model.

    The class mixing it in sets ``self.score_on`` (:func:`check_score_on`).
    With a single detector every method falls through to the wrapper's own.
    """

    score_on: str

    @property
    def semi_supervised(self) -> bool:
        """Whether the task model is a teacher-student pair."""
        return isinstance(self.task_model, SemiBaseDetector)

    def members(self, task_model: nn.Module) -> dict[str, nn.Module]:
        if isinstance(task_model, SemiBaseDetector):
            return {'student': task_model.student, 'teacher': task_model.teacher}
        return super().members(task_model)

    @property
    def student(self) -> nn.Module:
        """The pair's student, where mmdet's ``MeanTeacherHook`` looks
        (``runner.model.student``); no attribute for a single detector."""
        if not self.semi_supervised:
            raise AttributeError(f'{type(self).__name__} wraps a single model: no student')
        return self.task_model.student

    @property
    def teacher(self) -> nn.Module:
        """The pair's teacher (see :attr:`student`)."""
        if not self.semi_supervised:
            raise AttributeError(f'{type(self).__name__} wraps a single model: no teacher')
        return self.task_model.teacher

    def score_step(self, data: dict, outputs: Sequence[str] = ('pred_loss',), *args,
                   **kwargs) -> dict:
        """The wrapper's ``score_step``, on the ``score_on`` member of a pair."""
        if not self.semi_supervised:
            return super().score_step(data, outputs, *args, **kwargs)
        with self.reading(self.score_on):
            return super().score_step(data, outputs, *args, **kwargs)

    def loss(self, inputs, data_samples) -> dict:
        """mmdet's ``SemiBaseDetector.loss``, the ranking loss on the labeled batch only.

        mmdet runs the student on the labeled branch (``loss_by_gt_instances``:
        ``student.loss``, then its ``sup_weight`` and ``sup_`` prefix) and on the
        pseudo-labeled one (``loss_by_pseudo_instances``; plain
        ``SemiBaseDetector`` calls ``student.loss`` there too). Here
        ``loss_by_gt_instances`` alone is replaced, for the call, by the
        student's target losses with the taps recording (then mmdet's weight
        and prefix); the ranking loss is computed from those after mmdet's
        whole loss, so pseudo-labels never reach it and ``sup_weight`` does
        not scale it. The pseudo-labels, their losses and the order of it all
        are mmdet's code.
        """
        if not self.semi_supervised:
            return super().loss(inputs, data_samples)
        if not (isinstance(inputs, dict) and 'sup' in inputs):
            raise ValueError(
                f'model.detector is {type(self.task_model).__name__}, a teacher-student '
                "pair: its training batches come in branches ('sup', 'unsup_teacher', "
                "'unsup_student'), got a plain batch. Give the config "
                'active_learning.semi_supervised (the unlabeled branch drawn from the pool, '
                'see docs/experiments.md), or train a single detector')
        ranked: list[tuple] = []
        pair = self.task_model

        def labeled_loss(original):
            # mmdet's SemiBaseDetector.loss_by_gt_instances (mmdet 3.3.0, two lines: the
            # student's loss, reweighted and renamed), with the student's loss as the
            # target-loss pass that also records the taps. It is not swapped in as
            # student.loss under mmdet's own body: the target-loss replay calls
            # student.loss itself.
            def loss_by_gt_instances(batch_inputs: Tensor, batch_data_samples: list) -> dict:
                with self.reading('student'):
                    losses, terms = self._target_losses(batch_inputs, batch_data_samples)
                ranked.append(terms)
                weight = pair.semi_train_cfg.get('sup_weight', 1.)
                return rename_loss_dict('sup_', reweight_loss_dict(losses, weight))
            return loss_by_gt_instances
        with patched(pair, 'loss_by_gt_instances', labeled_loss):
            losses = pair.loss(inputs, data_samples)
        if len(ranked) != 1:
            raise RuntimeError(f'{type(pair).__name__}.loss ran the student on '
                               f'labeled batches {len(ranked)} times; expected once')
        losses.update(self._rank_terms(*ranked[0]))
        return losses
