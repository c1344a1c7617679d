"""MNIST, a small residual network (``circuits.zoo.resnet8_mnist``: He et al.'s CIFAR ResNet at
depth 8, one BasicBlock per stage, 16/32/64 channels, batch norm, option-A shortcuts, on
1 × 28 × 28 images), trained with the PFA paper's MNIST settings (Li & Benna 2024, Appendix 1.1)
as the MLP and LeNet are: the only real-data test of residual circuits available without a GPU.

    python -m circuits.run experiments/mnist_resnet.py --rule pfa --data-root ../shared/data
"""
from circuits import Training, zoo
from plasticity import pfa

circuit = zoo.resnet8_mnist(feedback=pfa(expansion=10))

# SGD, momentum 0.9, batch 64, lr 0.01 halved at epochs 20 and 30; weight decay 1e-4, and for
# PFA/PFA-o 0.03 on W and R in the first epoch to erase R's random start (as experiments/mnist_lenet.py).
training = Training(
    data="mnist", epochs=40, batch_size=64, lr=0.01, momentum=0.9,
    lr_milestones=[20, 30], lr_gamma=0.5, weight_decay=1e-4,
    per_rule={"pfa": {"first_epoch_weight_decay": 0.03},
              "pfa-o": {"first_epoch_weight_decay": 0.03},
              "pfa-o-square": {"first_epoch_weight_decay": 0.03}},
)
