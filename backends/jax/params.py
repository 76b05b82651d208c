"""Canonical <-> native (flax variables) parameter and state conversion.

flax's names and layouts already are the canonical ones, so the conversion is only nesting:
``"node/param"`` <-> ``variables["params"][node][param]`` and ``"node/mean"`` <->
``variables["batch_stats"][node]["mean"]``. Layouts that coincide: Dense kernel (in, out), Conv
kernel (kH, kW, in/groups, out) and (k, in/groups, out), BatchNorm/LayerNorm/GroupNorm
``scale``/``bias``, RMSNorm ``scale``, BatchNorm ``mean``/``var``,
Embed ``embedding`` (vocab, dim). ``check_structure`` proves it against the flax module itself.
"""

from __future__ import annotations

import jax
import numpy as np

from rosetta.errors import CheckpointError, RosettaError
from rosetta.graph import Graph

PARAMS = "params"
STATE = "batch_stats"


def _nest(graph: Graph, flat: dict, defs: dict, dtype, what: str) -> dict:
    missing = sorted(set(defs) - set(flat))
    extra = sorted(set(flat) - set(defs))
    if missing or extra:
        raise CheckpointError(f"{graph.name}: {what} do not fit the model"
                              + (f"; missing {missing}" if missing else "")
                              + (f"; unexpected {extra}" if extra else ""))
    tree: dict = {}
    for path, d in defs.items():
        arr = np.asarray(flat[path])
        if arr.shape != tuple(d.shape):
            raise CheckpointError(f"{graph.name}: {what[:-1]} {path!r} has shape {arr.shape}, "
                                  f"the model expects {tuple(d.shape)}")
        node, name = path.split("/")
        tree.setdefault(node, {})[name] = arr.astype(dtype, copy=True)
    return tree


def load(graph: Graph, params: dict, state: dict, dtype) -> dict:
    """flax variables {"params": ..., "batch_stats": ...} (NumPy leaves in ``dtype``)."""
    return {PARAMS: _nest(graph, params, graph.param_defs(), dtype, "parameters"),
            STATE: _nest(graph, state, graph.state_defs(), dtype, "state arrays")}


def host(arr) -> np.ndarray:
    """A writable NumPy copy of a fetched array; bfloat16 / float16 as float32 (NumPy has no
    bf16, and the Program API's arrays are float32 under the low precisions: exact)."""
    a = np.asarray(arr)
    if a.dtype.kind == "V" or a.dtype.name in ("bfloat16", "float16"):
        return a.astype(np.float32)
    return np.array(a)


def export(tree: dict) -> dict[str, np.ndarray]:
    """{"node/name": NumPy array} from one collection ({node: {name: array}}); one device fetch.

    The arrays are writable copies: on CPU ``device_get`` can return read-only views of device
    buffers, which the next (donating) train step would otherwise keep alive. bf16 / float16
    leaves come back as float32 (``host``)."""
    host_tree = jax.device_get(tree)
    return {f"{node}/{name}": host(arr) for node, leaves in host_tree.items()
            for name, arr in leaves.items()}


def check_structure(graph: Graph, model, example_inputs: dict) -> None:
    """Assert the flax module creates exactly the canonical variables (names and shapes).

    Runs ``model.init`` abstractly (``jax.eval_shape``: no compute, no memory). A mismatch is a
    bug in this backend, reported before anything runs.
    """
    shapes = jax.eval_shape(lambda x: model.init(
        {"params": jax.random.key(0), "dropout": jax.random.key(0)}, x, train=False),
        example_inputs)
    for collection, defs in ((PARAMS, graph.param_defs()), (STATE, graph.state_defs())):
        native = {f"{node}/{name}": tuple(s.shape)
                  for node, leaves in shapes.get(collection, {}).items()
                  for name, s in leaves.items()}
        expected = {p: tuple(d.shape) for p, d in defs.items()}
        if native != expected:
            raise RosettaError(f"jax backend bug: flax {collection} {native} differ from the "
                               f"canonical {expected}")
