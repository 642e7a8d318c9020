"""The Leeds Sports Pose 14-joint skeleton, and a COCO-format dataset for it.

LSP (Johnson & Everingham, BMVC 2010) and LSP Extended (CVPR 2011) label
14 joints in the order of :data:`LSP_JOINTS`. mmpose 1.3.2 has no LSP
dataset; :class:`LSPDataset` is its ``CocoDataset`` with this skeleton, so a
COCO-style keypoint file written by
:func:`mmal.datasets.converters.lspet.convert_lspet` loads unchanged.

Sigmas (only used by OKS-based metrics, not by PCK): COCO's per-joint
values for the limbs (Ronchi & Perona, the COCO keypoint evaluation), and
CrowdPose's 0.079 for the neck and head top, which COCO does not have
(mmpose's ``configs/_base_/datasets/crowdpose.py``).
"""
from mmpose.datasets import CocoDataset
from mmpose.registry import DATASETS

#: LSP's joint order (the README of lspet_dataset.zip), snake_case as mmpose names joints.
LSP_JOINTS = (
    'right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee', 'left_ankle',
    'right_wrist', 'right_elbow', 'right_shoulder', 'left_shoulder', 'left_elbow',
    'left_wrist', 'neck', 'head_top')

_LOWER = {'right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee', 'left_ankle'}
_RIGHT, _LEFT, _CENTRE = [255, 128, 0], [0, 255, 0], [51, 153, 255]


def _swap(name: str) -> str:
    for a, b in (('right_', 'left_'), ('left_', 'right_')):
        if name.startswith(a):
            return b + name[len(a):]
    return ''


def _color(name: str) -> list[int]:
    return _RIGHT if name.startswith('right_') else _LEFT if name.startswith('left_') else _CENTRE


LSP_SKELETON = (
    ('right_ankle', 'right_knee'), ('right_knee', 'right_hip'),
    ('left_ankle', 'left_knee'), ('left_knee', 'left_hip'), ('right_hip', 'left_hip'),
    ('right_wrist', 'right_elbow'), ('right_elbow', 'right_shoulder'),
    ('left_wrist', 'left_elbow'), ('left_elbow', 'left_shoulder'),
    ('right_shoulder', 'neck'), ('left_shoulder', 'neck'),
    ('right_shoulder', 'right_hip'), ('left_shoulder', 'left_hip'), ('neck', 'head_top'))

_SIGMA = dict(ankle=0.089, knee=0.087, hip=0.107, wrist=0.062, elbow=0.072, shoulder=0.079,
              neck=0.079, head_top=0.079)

#: mmpose dataset metainfo (the ``dataset_info`` of mmpose's ``_base_/datasets/*.py``).
LSP_METAINFO = dict(
    dataset_name='lsp',
    paper_info=dict(
        author='Sam Johnson and Mark Everingham',
        title='Learning Effective Human Pose Estimation from Inaccurate Annotation',
        container='IEEE Conference on Computer Vision and Pattern Recognition (CVPR)',
        year='2011',
        homepage='http://sam.johnson.io/research/lspet.html'),
    keypoint_info={
        i: dict(name=name, id=i, color=_color(name),
                type='lower' if name in _LOWER else 'upper', swap=_swap(name))
        for i, name in enumerate(LSP_JOINTS)},
    skeleton_info={
        i: dict(link=link, id=i, color=_color(link[0]) if _color(link[0]) == _color(link[1])
                else _CENTRE)
        for i, link in enumerate(LSP_SKELETON)},
    joint_weights=[1.0] * len(LSP_JOINTS),
    sigmas=[_SIGMA[name.split('_', 1)[1] if name.startswith(('left_', 'right_')) else name]
            for name in LSP_JOINTS])


@DATASETS.register_module()
class LSPDataset(CocoDataset):
    """LSP / LSP Extended in COCO's keypoint format (14 joints, :data:`LSP_JOINTS`).

    Everything but the skeleton is mmpose's ``CocoDataset``: ``ann_file`` is
    a COCO keypoint JSON, ``data_prefix=dict(img=...)`` the image folder.
    """

    METAINFO: dict = LSP_METAINFO
