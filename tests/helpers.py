"""Small circuits for the tests."""
from circuits import Circuit
from connectomes import Dense
from populations import Input, Layer, Readout


def small_mlp(rule, sizes=(6, 7, 5, 4), activation="tanh", seed=0, name="small"):
    """Input(sizes[0]) → Layer … → Readout(sizes[-1]), Dense everywhere, ``rule`` on all."""
    c = Circuit(name, seed=seed)
    pops = [c.add(Input("x0", sizes[0]))]
    for i, n in enumerate(sizes[1:-1], start=1):
        pops.append(c.add(Layer(f"h{i}", n, activation=activation)))
    pops.append(c.add(Readout("out", sizes[-1])))
    for pre, post in zip(pops, pops[1:]):
        c.connect(pre, post, Dense())
    if rule is not None:
        c.feedback(rule)
    return c
