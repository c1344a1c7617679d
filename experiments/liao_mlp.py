"""MNIST, 784-512-512-10 ReLU, the protocol of experiments/liao_sign_symmetry.py (Liao, Leibo &
Poggio 2016's questions on this project's MNIST MLP): 20 epochs, batch 64, SGD momentum 0.9, no
weight decay, a constant learning rate (each arm's is chosen on the validation split by the
sweep), 10,000 training cells held out for validation.

    python -m circuits.run experiments/liao_mlp.py --rule usf --data-root ../shared/data
"""
from circuits import Training, zoo
from plasticity import usf

circuit = zoo.mlp((784, 512, 512, 10), name="liao-mlp", feedback=usf(scale="none"))

training = Training(data="mnist", epochs=20, batch_size=64, lr=0.01, momentum=0.9, weight_decay=0.0, val_size=10_000)
