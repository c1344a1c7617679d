"""MNIST, 784-512-512-10 ReLU, trained as in Li & Benna (2024), Appendix 1.1.

    python -m circuits.run experiments/mnist_mlp.py --rule pfa --data-root ../shared/data
"""
from circuits import Circuit, Training
from connectomes import Dense
from plasticity import pfa
from populations import Input, Layer, Readout

c = Circuit("mnist-mlp", seed=0)
x = c.add(Input("pixels", 784))
h1 = c.add(Layer("h1", 512, activation="relu"))
h2 = c.add(Layer("h2", 512, activation="relu"))
y = c.add(Readout("digits", 10, loss="cross_entropy"))
for pre, post in [(x, h1), (h1, h2), (h2, y)]:
    c.connect(pre, post, Dense())
c.feedback(pfa(expansion=10))
circuit = c

# SGD, momentum 0.9, lr 0.01 halved at epochs 20 and 30; weight decay 1e-4, and for PFA/PFA-o (both N̄ settings)
# 0.03 on W and R in the first epoch to erase R's random start.
training = Training(
    data="mnist", epochs=40, batch_size=64, lr=0.01, momentum=0.9,
    lr_milestones=[20, 30], lr_gamma=0.5, weight_decay=1e-4,
    per_rule={"pfa": {"first_epoch_weight_decay": 0.03},
              "pfa-o": {"first_epoch_weight_decay": 0.03},
              "pfa-o-square": {"first_epoch_weight_decay": 0.03}},
)
