"""A circuit rebuilt from the description config.json records (``Circuit.describe()``), without
running any file: populations, geometries, connectors and rules come from fixed tables of this
package, their options are plain data. A description the tables cannot express (an exact-BP
block from ``Circuit.from_torch``, a rule whose options are not its arguments) is refused, and so
is any rebuild whose own description is not exactly the recorded one."""
from __future__ import annotations

import json

from circuits.circuit import Circuit
from circuits.errors import ConfigError
from connectomes import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dense, FixedProbability, Flatten, Identity, MaxPool2d
from connectomes.geometry import ShortcutA
from plasticity import make_rule
from populations import Input, Layer, Readout

GEOMETRIES = {"dense": Dense, "conv2d": Conv2d, "identity": Identity, "flatten": Flatten, "maxpool2d": MaxPool2d,
              "avgpool2d": AvgPool2d, "adaptive_avgpool2d": AdaptiveAvgPool2d, "shortcut_a": ShortcutA}


def _population(d: dict):
    shape = tuple(d["shape"])
    size = shape[0] if len(shape) == 1 else shape
    cells = d.get("cells")  # Dale's principle (absent: signed synapses)
    if d["kind"] == "input":
        return Input(d["name"], size, cells=cells)
    if d["kind"] == "readout":
        return Readout(d["name"], size, loss=d["loss"], bias=d["bias"], cells=cells)
    if d["kind"] == "layer":
        return Layer(d["name"], size, activation=d["activation"], bias=d["bias"], norm=d["norm"], cells=cells)
    raise ConfigError(f"population kind {d['kind']!r}")


def _connector(d: dict | None):
    if d is None or d.get("connector") == "all_to_all":
        return None
    if d.get("connector") == "fixed_probability":
        return FixedProbability(d["p"], seed=d.get("seed"))
    raise ConfigError(f"connector {d!r}")


def _geometry(d: dict):
    options = {k: v for k, v in d.items() if k != "kind"}
    if d["kind"] not in GEOMETRIES:
        raise ConfigError(f"geometry {d['kind']!r}")
    return GEOMETRIES[d["kind"]](**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})


def _rule(d: dict):
    options = {k: v for k, v in d.items() if k not in ("rule", "connector")}
    if d.get("connector") is not None:
        options["connector"] = _connector(d["connector"])
    return make_rule(d["rule"], **options)


def normalised(description: dict) -> dict:
    return json.loads(json.dumps(description, default=str))


def rebuild(description: dict) -> Circuit:
    """The circuit of ``description``; ConfigError saying what cannot be rebuilt."""
    try:
        c = Circuit(description["name"], seed=description["seed"])
        for p in description["populations"]:
            if p["kind"] != "intermediate":  # feedback() adds those
                c.add(_population(p))
        groups = {}
        for p in description["projections"]:
            c.connect(p["pre"], p["post"], _geometry(p["geometry"]), name=p["name"], plastic=p["plastic"],
                      connector=_connector(p.get("connector")))
            if p["rule"] is not None:
                groups.setdefault(json.dumps(p["rule"], sort_keys=True), []).append(p["name"])
        for rule, names in groups.items():
            c.feedback(_rule(json.loads(rule)), projections=names)
    except ConfigError:
        raise
    except Exception as err:  # a description these tables cannot express
        raise ConfigError(f"{type(err).__name__}: {err}") from None
    if normalised(c.describe()) != normalised(description):
        raise ConfigError("its rebuild does not describe itself as recorded")
    return c
