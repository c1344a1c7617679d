"""CIFAR-10, ResNet-56 with option-A shortcuts (``circuits.zoo.resnet56``), with the PFA paper's
ResNet-20 settings (Li & Benna 2024, Appendix 1.1).

    python -m circuits.run experiments/cifar10_resnet56.py --rule pfa --data-root DIR
"""
import os
import runpy

from circuits import zoo
from plasticity import pfa

circuit = zoo.resnet56(feedback=pfa(expansion=10))

# The settings of experiments/cifar10_resnet20.py: SGD, momentum 0.9, batch 128, lr 0.1 × 0.1 at
# 100, 150, 200; weight decay 1e-4 (PFA/PFA-o: 0.005 in the first epoch); DFA at lr 1e-3.
training = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar10_resnet20.py"))["training"]
