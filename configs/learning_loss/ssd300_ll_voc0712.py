# Learning Loss for Active Learning (Yoo & Kweon, CVPR 2019) on SSD300-VGG16,
# PASCAL VOC 07+12 trainval, evaluated on VOC2007 test (mAP, 11 points).
# Everything mmdet's ssd300_voc0712 sets stays: data paths data/VOCdevkit/,
# pipeline, schedule (24 epochs of the 10x repeated set), and the pretrained
# VGG16 init (open-mmlab://vgg16_caffe), which needs that checkpoint locally
# or a network connection.
_base_ = 'mmdet::pascal_voc/ssd300_voc0712.py'

custom_imports = dict(imports=['mmal'], allow_failed_imports=False)

detector = _base_.model
# mmdet's SSDHead plus per-image losses, and the predict fix of mmdet 3.3.0.
detector.bbox_head.type = 'PerImageLossSSDHead'

model = dict(
    _delete_=True,
    type='LearningLossDetector',
    detector=detector,
    # The six multi-scale maps that feed the SSD head: 38, 19, 10, 5, 3, 1.
    taps=['neck'],
    loss_prediction=dict(
        type='LossPredictionModule',
        in_channels=[512, 1024, 512, 256, 256, 256],
        width=128),
    rank_loss=dict(type='LossPredictionLoss', margin=1.0),  # xi
    rank_loss_weight=1.0)  # lambda

# The paper detaches the module's input after 60% of training (epoch 120 of
# 200); here that is the first LR step, epoch 16 of 24.
custom_hooks = [
    dict(type='NumClassCheckHook'),
    dict(type='CheckInvalidLossHook', interval=50, priority='VERY_LOW'),
    dict(type='LossPredictionStopGradientHook', stop_fraction=2 / 3),  # epoch 16 of 24
]
