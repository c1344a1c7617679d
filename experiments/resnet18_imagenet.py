"""ImageNet, ResNet-18 (``circuits.zoo.resnet18``, torchvision's), trained as in Li & Benna
(2024), Appendix 1.1.

    python -m circuits.run experiments/resnet18_imagenet.py --rule pfa --data-root DIR

DIR/imagenet/{train,val}/CLASS/*.JPEG (torchvision ImageFolder layout), read by a DataLoader
(``--set data=imagenet:workers=16``): RandomResizedCrop 224 + flip for training, Resize 256 +
CenterCrop 224 for evaluation.
"""
from circuits import Training, zoo
from plasticity import pfa

circuit = zoo.resnet18(num_classes=1000, feedback=pfa(expansion=10))

# SGD, momentum 0.9, batch 256, lr 0.1 × 0.1 at epochs 20, 40, 60, 75 epochs; weight decay
# 1e-4, and for PFA/PFA-o 5e-4 on W and R in the first epoch.
training = Training(
    data="imagenet", epochs=75, batch_size=256, lr=0.1, momentum=0.9,
    lr_milestones=[20, 40, 60], lr_gamma=0.1, weight_decay=1e-4, eval_batch_size=256,
    per_rule={"pfa": {"first_epoch_weight_decay": 5e-4},
              "pfa-o": {"first_epoch_weight_decay": 5e-4},
              "pfa-o-square": {"first_epoch_weight_decay": 5e-4}},
)
