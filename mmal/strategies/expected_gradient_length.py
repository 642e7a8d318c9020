"""Expected gradient length: label the samples that would change the model most."""
import numpy as np

from ..registry import STRATEGIES
from ..scoring import NUM_SAMPLES
from .base import BaseStrategy, require


@STRATEGIES.register_module()
class ExpectedGradientLengthStrategy(BaseStrategy):
    """Score = the length of the last layer's gradient if the sample were labeled.

    Expected gradient length (Settles, Craven & Ray, *Multiple-Instance
    Active Learning*, NeurIPS 2008; the "expected model change" family of
    Settles' survey): a sample whose label would move the model's
    parameters most is the most informative, scored by
    ``E_{y ~ P(y|x)} ||grad_theta loss(x, y)||``.

    **The label used here is the model's own most likely one** (BADGE's
    hypothetical label, Ash et al., ICLR 2020), not an expectation over
    every label: the score is ``||g(x)||`` with ``g`` the model's
    ``'grad_embedding'`` output. Why:

    - a detection image's label is a joint labeling of all its candidate
      boxes; the expectation runs over ``(C+1)^N_i`` labelings of a
      gradient summed over boxes, with no closed form for its norm;
    - for one softmax box (a log-likelihood loss), the argmax label's
      gradient is the *shortest* of all labels' (Ash et al.,
      Proposition 1: ``||p - e_y|| >= ||p - e_argmax||``), so the score is
      a lower bound on how far the true label, whatever it is, would move
      the layer, and like the expectation it is 0 for a certain
      prediction and largest for a uniform one;
    - one embedding serves EGL and BADGE, so EGL is BADGE's magnitude
      half without its diversity half: the two compare cleanly.

    What the loss and the layer are is the task wrapper's
    (``score_step``): **detection**, each candidate box's log-likelihood
    loss under its argmax label (softmax heads: over the classes and
    background; sigmoid heads: each class against its own rounding),
    summed over the image's boxes, differentiated with respect to the
    class-logit conv (center tap, anchors tied; see
    :func:`~mmal.models.gradient_embeddings.dense_gradient_embeddings`);
    an image with no candidate box scores 0. **Pose**, the heatmap MSE
    against the codec's Gaussian at each joint's heatmap peak,
    differentiated with respect to the conv that outputs the heatmaps
    (:func:`~mmal.models.gradient_embeddings.heatmap_gradient_embedding`);
    a regression loss, so the lower-bound argument does not carry over: the
    score grows with the distance between the predicted heatmap and a clean
    peak at its maximum, weighted by the features. A model that still
    predicts flat, low heatmaps everywhere (early in training) gives every
    sample nearly the same score (measured: 1.7992 to 1.7996 over 24
    candidates after one epoch on 8 persons).

    The norm is over the whole last layer, the parameters the label would
    update directly; the earlier layers' gradients are left out, as in
    BADGE, for their size.
    """

    outputs = ('grad_embedding',)
    tasks = ('detection', 'pose')

    def scores(self, candidate_outputs: dict, labeled_outputs: dict) -> np.ndarray:
        require(self, candidate_outputs, 'grad_embedding')
        embedding = embedding_matrix(candidate_outputs['grad_embedding'],
                                     candidate_outputs[NUM_SAMPLES], type(self).__name__)
        return np.sqrt(np.einsum('ij,ij->i', embedding, embedding, dtype=np.float64))


def embedding_matrix(value, num_samples: int, user: str) -> np.ndarray:
    """The candidates' gradient embeddings as one ``(N, E)`` float32 array.

    Refuses a committee's stacked ``(N, M, E)`` and embeddings of
    different lengths (one model gives one length), naming what arrived.
    """
    if isinstance(value, list):
        lengths = {np.shape(v) for v in value}
        if len(lengths) != 1:
            raise ValueError(f'{user}: the gradient embeddings have different shapes '
                             f'{sorted(lengths)}; one model gives one length')
        value = np.stack(value) if value else np.zeros((0, 0), np.float32)
    embedding = np.asarray(value, dtype=np.float32)
    if embedding.ndim != 2 or len(embedding) != num_samples:
        raise ValueError(f'{user} expects one gradient embedding per candidate, '
                         f'({num_samples}, E); got {embedding.shape} (a committee pass '
                         'gives (N, members, E): ask for one member)')
    if not np.all(np.isfinite(embedding)):
        raise FloatingPointError(f'{user}: {int(np.sum(~np.isfinite(embedding)))} non-finite '
                                 'values in the gradient embeddings')
    return embedding
