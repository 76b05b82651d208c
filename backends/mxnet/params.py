"""Canonical <-> native parameters and state.

The MXNet backend keeps every parameter in its canonical layout (Dense kernel (in, out), Conv2D
kernel (kH, kW, in/groups, out), LSTM kernel (C, 4H), ...): its lowerings transpose inside the
graph where an operator wants another layout (``layers.conv_weight``), so loading and exporting
is a copy, with the program's dtype and context. A canonical path ``node/name`` is the Gluon
``Parameter`` ``<node key>_<name>`` of the node's ``NodeBlock``; BatchNorm ``mean`` and ``var``
are Parameters with ``grad_req="null"`` (the running statistics, biased variance).
"""

from __future__ import annotations

import numpy as np
from mxnet import nd

from rosetta.errors import CheckpointError
from rosetta.graph import Graph


def slots(graph: Graph, nodes: dict) -> tuple[dict, dict]:
    """(parameters, state) as {canonical path: gluon Parameter}, in graph order."""
    params, state = {}, {}
    for node in graph.nodes:
        block = nodes[node.name]
        for defs, out in ((node.params, params), (node.state, state)):
            for name in defs:
                out[f"{node.name}/{name}"] = getattr(block, name)
    return params, state


def load(slot_map: dict, arrays: dict, what: str, dtype: str) -> None:
    """Copy canonical arrays into the Parameters, checked by name and shape first."""
    missing = [p for p in slot_map if p not in arrays]
    if missing:
        raise CheckpointError(f"{what}: missing {', '.join(missing)}")
    unknown = [p for p in arrays if p not in slot_map]
    if unknown:
        raise CheckpointError(f"{what}: unknown path(s) {', '.join(unknown)}; this model has "
                              f"{', '.join(slot_map) or 'none'}")
    for path, param in slot_map.items():
        a = np.asarray(arrays[path])
        if a.shape != tuple(param.shape):
            raise CheckpointError(f"{what}: {path} has shape {a.shape}, the model expects "
                                  f"{tuple(param.shape)}")
    for path, param in slot_map.items():
        param.set_data(nd.array(np.asarray(arrays[path]), dtype=dtype,
                                ctx=param.list_ctx()[0]))


def export(slot_map: dict) -> dict:
    """Canonical float copies of the Parameters."""
    return {path: np.array(param.data().asnumpy(), order="C") for path, param in slot_map.items()}
