# mmdet's SoftTeacher augmentations of an unlabeled image's strong (student) view
# (mmdet::_base_/datasets/semi_coco_detection.py; not inherited from there, which
# also brings COCO's dataloaders): one colour and one geometric RandAugment, in
# random order. The geometric ones write homography_matrix, which mmdet's
# SemiBaseDetector reads to carry the teacher's pseudo-boxes onto the student's view.
color_space = [
    [dict(type='ColorTransform')], [dict(type='AutoContrast')], [dict(type='Equalize')],
    [dict(type='Sharpness')], [dict(type='Posterize')], [dict(type='Solarize')],
    [dict(type='Color')], [dict(type='Contrast')], [dict(type='Brightness')],
]
geometric = [
    [dict(type='Rotate')], [dict(type='ShearX')], [dict(type='ShearY')],
    [dict(type='TranslateX')], [dict(type='TranslateY')],
]
strong_augmentations = [
    dict(type='RandomOrder', transforms=[
        dict(type='RandAugment', aug_space=color_space, aug_num=1),
        dict(type='RandAugment', aug_space=geometric, aug_num=1),
    ]),
    dict(type='RandomErasing', n_patches=(1, 5), ratio=(0, 0.2)),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
]
meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
             'flip_direction', 'homography_matrix')
