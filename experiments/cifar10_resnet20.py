"""CIFAR-10, ResNet-20 with option-A shortcuts (He et al. 2016; ``circuits.zoo.resnet20``),
trained as in Li & Benna (2024), Appendix 1.1.

    python -m circuits.run experiments/cifar10_resnet20.py --rule pfa --data-root DIR

DIR/cifar-10-batches-py as torchvision unpacks it. Training batches are augmented (random crop
32 with padding 4, horizontal flip). ``--set data=fake_cifar10`` trains on generated data.
"""
from circuits import Training, zoo
from plasticity import pfa

circuit = zoo.resnet20(feedback=pfa(expansion=10))

# SGD, momentum 0.9, batch 128, lr 0.1 × 0.1 at epochs 100, 150, 200 (the paper trains 200
# epochs, its code 250); weight decay 1e-4, and for PFA/PFA-o 0.005 on W and R in the first
# epoch. DFA diverges at lr 0.1: BioTorch's CIFAR-10 DFA setting is lr 1e-3 (paper: 1e-4 to 1e-3).
training = Training(
    data="cifar10", epochs=200, batch_size=128, lr=0.1, momentum=0.9,
    lr_milestones=[100, 150, 200], lr_gamma=0.1, weight_decay=1e-4,
    per_rule={"pfa": {"first_epoch_weight_decay": 0.005},
              "pfa-o": {"first_epoch_weight_decay": 0.005},
              "pfa-o-square": {"first_epoch_weight_decay": 0.005},
              "dfa": {"lr": 1e-3}},
)
