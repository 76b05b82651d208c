"""Random specs for fuzzing: valid DAGs of the registered ops, and corruptions of valid specs.

``random_model(draw)`` builds a small random graph that is valid by construction (shapes tracked
with the same padding rule the ops use), mixing image and vector paths, residual adds and
concatenations, and the tensor-level shape ops (Transpose, Slice, Pad, Gather with constant
indices, an Unsqueeze/Squeeze pair, a float -> int -> float Cast pair) on any rank. Ill-conditioned
parametrizations are avoided on purpose: every BatchNorm is preceded by a tanh, because a bias that
reaches a BatchNorm through affine ops only (Dense, pooling, Concatenate, ...) is constant over the
batch, so its exact gradient is zero and the backends return rounding noise that BatchNorm's
1/sqrt(var) and Adam's 1/epsilon amplify (see docs/conformance/float32.md).
"""

from __future__ import annotations

from rosetta.graph import Graph, InputDef, Node
from rosetta.ops.windows import resolve_padding

ACTIVATIONS = [{"fn": "relu"}, {"fn": "tanh"}, {"fn": "sigmoid"}, {"fn": "silu"},
               {"fn": "gelu", "approximate": "none"}, {"fn": "gelu", "approximate": "tanh"},
               {"fn": "leaky_relu", "slope": 0.2}, {"fn": "softmax"}, {"fn": "identity"}]


def random_model(draw, st, max_nodes: int = 6) -> Graph:
    """A random valid Graph; ``draw``/``st`` are hypothesis's draw function and strategies."""
    image = draw(st.booleans())
    if image:
        shape = (draw(st.integers(4, 7)), draw(st.integers(4, 7)), draw(st.integers(1, 3)))
    else:
        shape = (draw(st.integers(2, 6)),)
    nodes: list[Node] = []
    pool = [("x", shape)]
    n_nodes = draw(st.integers(1, max_nodes))
    for i in range(n_nodes):
        src, sh = pool[draw(st.integers(0, len(pool) - 1))]
        name = f"n{i}"
        choice = draw(st.sampled_from(
            ["conv", "maxpool", "avgpool", "dense", "act", "bn", "ln", "add", "concat", "gap",
             *TENSOR_SHAPE, *MATH]
            if len(sh) == 3 else ["dense", "act", "bn", "ln", "add", "concat", *TENSOR_SHAPE,
                                  *MATH, *(["rnn"] if len(sh) == 1 else [])]))
        if choice == "bn":
            nodes.append(Node(f"{name}_tanh", "Activation", {"fn": "tanh"}, (src,)))
            src = f"{name}_tanh"
        make = (_make_math if choice in MATH else
                _make_tensor_shape if choice in TENSOR_SHAPE else _make)
        node, out = make(draw, st, choice, name, src, sh, pool)
        if not node:
            continue
        nodes.extend(node if isinstance(node, list) else [node])
        pool.append((name, out))
    last, sh = pool[-1]
    if len(sh) > 1:
        nodes.append(Node("flat", "Flatten", {}, (last,)))
        last = "flat"
    nodes.append(Node("head", "Dense", {"units": 3}, (last,)))
    return Graph([InputDef("x", shape)], nodes, ["head"], name="fuzz")


TENSOR_SHAPE = ["transpose", "slice", "pad", "gather", "unsqueeze_squeeze", "cast_roundtrip"]


def _make_tensor_shape(draw, st, choice, name, src, sh, pool):
    """([nodes], output shape) of a tensor-level shape op on a value of shape ``sh`` (several
    nodes for the pairs: the last is named ``name``), or ([], None)."""
    rank = len(sh)
    if choice == "transpose":
        perm = tuple(draw(st.permutations(range(rank))))
        return [Node(name, "Transpose", {"perm": list(perm)}, (src,))], tuple(sh[p] for p in perm)
    if choice == "slice":
        ax = draw(st.integers(-rank, rank - 1))
        size = sh[ax]
        start = draw(st.integers(-size, size - 1))
        stop = draw(st.integers(-size, size + 2))
        step = draw(st.integers(1, 2))
        n = len(range(*slice(start, stop, step).indices(size)))
        if not n:
            return [], None
        out = list(sh)
        out[ax] = n
        return [Node(name, "Slice", {"axes": [ax], "starts": [start], "stops": [stop],
                                     "steps": [step]}, (src,))], tuple(out)
    if choice == "pad":
        pads = [[draw(st.integers(0, 1)), draw(st.integers(0, 2))] for _ in sh]
        value = draw(st.sampled_from([0.0, -0.5, 1.5]))
        return ([Node(name, "Pad", {"pads": pads, "value": value}, (src,))],
                tuple(s + lo + hi for s, (lo, hi) in zip(sh, pads)))
    if choice == "gather":
        ax = draw(st.integers(0, rank - 1))
        size = sh[ax]
        if rank > 1 and draw(st.booleans()):
            idx = draw(st.integers(-size, size - 1))
            return ([Node(name, "Gather", {"axis": ax, "indices": idx}, (src,))],
                    (*sh[:ax], *sh[ax + 1:]))
        idx = draw(st.lists(st.integers(-size, size - 1), min_size=1, max_size=3))
        return ([Node(name, "Gather", {"axis": ax - rank, "indices": idx}, (src,))],
                (*sh[:ax], len(idx), *sh[ax + 1:]))
    if choice == "unsqueeze_squeeze":
        ax = draw(st.integers(-rank - 1, rank))
        pos = ax + rank + 1 if ax < 0 else ax
        return [Node(f"{name}_unsqueeze", "Unsqueeze", {"axes": [ax]}, (src,)),
                Node(name, "Squeeze", {"axes": [pos]}, (f"{name}_unsqueeze",))], sh
    # cast_roundtrip: truncation toward zero of a float, back to float (no gradient through it)
    return [Node(f"{name}_int", "Cast", {"to": "int"}, (src,)),
            Node(name, "Cast", {"to": "float"}, (f"{name}_int",))], sh


def _make(draw, st, choice, name, src, sh, pool):
    if choice == "conv":
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 2))
        d = draw(st.integers(1, 2)) if s == 1 else 1
        pad = draw(st.sampled_from(["valid", "same", "explicit"]))
        if pad == "explicit":
            pad = [[draw(st.integers(0, 1)), draw(st.integers(0, 2))] for _ in range(2)]
        groups = draw(st.sampled_from([g for g in (1, 2) if sh[2] % g == 0]))
        filters = groups * draw(st.integers(1, 2))
        attrs = {"filters": filters, "kernel_size": k, "strides": s, "dilation": d,
                 "padding": pad, "groups": groups,
                 "activation": draw(st.sampled_from(["identity", "relu", "tanh", "gelu_exact"]))}
        out = _window_out(sh[:2], k, s, d, pad)
        if out is None:
            return None, None
        return Node(name, "Conv2D", attrs, (src,)), (*out, filters)
    if choice in ("maxpool", "avgpool"):
        k = draw(st.integers(1, 3))
        s = draw(st.integers(1, 2))
        pad = draw(st.sampled_from(["valid", "same"]))
        out = _window_out(sh[:2], k, s, 1, pad)
        if out is None:
            return None, None
        return (Node(name, "MaxPool2D" if choice == "maxpool" else "AvgPool2D",
                     {"kernel_size": k, "strides": s, "padding": pad}, (src,)), (*out, sh[2]))
    if choice == "dense":
        units = draw(st.integers(1, 4))
        return (Node(name, "Dense", {"units": units, "activation": draw(st.sampled_from(
            ["identity", "relu", "tanh", "sigmoid", "silu"]))}, (src,)), (*sh[:-1], units))
    if choice == "rnn":   # a vector (n,) read as a sequence of n steps of one feature
        op = draw(st.sampled_from(["LSTM", "GRU", "SimpleRNN"]))
        units = draw(st.integers(1, 3))
        dirs = 2 if draw(st.booleans()) else 1
        attrs = {"units": units, "bidirectional": dirs == 2, "bias_init": "normal"}
        if op == "GRU":   # reset-before (Keras's reset_after=False) and a one-bias GRU too
            attrs["reset_after"] = draw(st.booleans())
        attrs["recurrent_bias"] = draw(st.booleans())   # torch's second bias
        return ([Node(f"{name}_seq", "Reshape", {"shape": (sh[0], 1)}, (src,)),
                 Node(name, op, attrs, (f"{name}_seq",))], (units * dirs,))
    if choice == "act":
        return Node(name, "Activation", dict(draw(st.sampled_from(ACTIVATIONS))), (src,)), sh
    if choice == "bn":
        return Node(name, "BatchNorm", {"momentum": draw(st.sampled_from([0.0, 0.5, 0.9])),
                                        "epsilon": 1e-3}, (src,)), sh
    if choice == "ln":
        if sh[-1] < 2:
            return None, None
        return Node(name, "LayerNorm", {"epsilon": 1e-3}, (src,)), sh
    if choice == "gap":
        return Node(name, "GlobalAvgPool2D", {}, (src,)), (sh[2],)
    same = [n for n, s in pool if s == sh and n != src]
    if choice == "add":
        if not same:
            return None, None
        return Node(name, "Add", {}, (src, draw(st.sampled_from(same)))), sh
    if choice == "concat":
        other = [(n, s) for n, s in pool if len(s) == len(sh) and s[:-1] == sh[:-1]]
        o, osh = other[draw(st.integers(0, len(other) - 1))]
        return Node(name, "Concatenate", {}, (src, o)), (*sh[:-1], sh[-1] + osh[-1])
    return None, None  # pragma: no cover


# the tensor-math ops (rosetta.ops.math, rosetta.ops.reduction): shared Parameters of lower rank
# broadcast against batched values, scalar constants, masks from comparisons into Where
MATH = ["unary", "binary", "scalar", "reduce", "softmax", "matmul", "where", "attention"]
SAFE_UNARY = ["neg", "abs", "tanh", "sigmoid", "sin", "cos", "erf", "square"]
BINARY = ["Add", "Subtract", "Multiply", "Maximum", "Minimum"]


def _make_math(draw, st, choice, name, src, sh, pool):
    """(node or list of nodes, output shape) of a tensor-math op on ``src`` (shape ``sh``);
    the node named ``name`` is the last one."""
    if choice == "unary":
        return Node(name, "Unary", {"fn": draw(st.sampled_from(SAFE_UNARY))}, (src,)), sh
    if choice == "binary":   # src op shared Parameter of the trailing axes (lower rank)
        k = draw(st.integers(1, len(sh)))
        pshape = tuple(draw(st.sampled_from([1, n])) for n in sh[len(sh) - k:])
        p = Node(f"{name}_p", "Parameter", {"shape": pshape, "init": "glorot_uniform"}, ())
        op = draw(st.sampled_from(BINARY))
        pair = (src, p.name) if draw(st.booleans()) else (p.name, src)
        return [p, Node(name, op, {}, pair)], sh
    if choice == "scalar":
        op = draw(st.sampled_from(BINARY + ["Divide"]))
        c = draw(st.sampled_from([0.5, -1.5, 2.0]))
        return Node(name, op, {"constant": c, "reverse": op == "Subtract"
                               and draw(st.booleans())}, (src,)), sh
    if choice == "reduce":
        axis = draw(st.integers(-len(sh), len(sh) - 1))
        fn = draw(st.sampled_from(["sum", "mean", "max", "min", "var"]))
        if fn == "var" and sh[axis] < 2:
            return None, None
        attrs = {"fn": fn, "axes": (axis,), "keepdims": True}
        if fn == "var":
            attrs["correction"] = draw(st.sampled_from([0, 1]))
        return Node(name, "Reduce", attrs, (src,)), tuple(
            1 if i == axis % len(sh) else n for i, n in enumerate(sh))
    if choice == "softmax":
        op = draw(st.sampled_from(["Softmax", "LogSoftmax", "Cumsum"]))
        return Node(name, op, {"axis": draw(st.integers(-len(sh), len(sh) - 1))}, (src,)), sh
    if choice == "matmul":   # src @ a shared (C, units) Parameter: a Dense without bias
        units = draw(st.integers(1, 3))
        w = Node(f"{name}_w", "Parameter", {"shape": (sh[-1], units), "init": "glorot_uniform"},
                 ())
        return [w, Node(name, "MatMul", {}, (src, w.name))], (*sh[:-1], units)
    if choice == "where":    # where(src > c, src, other) with a same-shaped other or a scalar
        cond = Node(f"{name}_gt", "Greater", {"constant": 0.1}, (src,))
        same = [n for n, s in pool if s == sh and n != src]
        if same and draw(st.booleans()):
            return [cond, Node(name, "Where", {}, (cond.name, src, draw(st.sampled_from(same))))
                    ], sh
        return [cond, Node(name, "Where", {"y": -0.5}, (cond.name, src))], sh
    if choice == "attention":   # self-attention over src (..., T, C): q = k = v = src
        if len(sh) < 2:
            return None, None
        attrs = {"causal": draw(st.booleans()), "scale": draw(st.sampled_from([None, 0.5]))}
        mask = draw(st.sampled_from(["none", "keep", "float"]))
        if mask == "none":
            return Node(name, "DotProductAttention", attrs, (src, src, src)), sh
        m = Node(f"{name}_m", "Dense", {"units": sh[-2]}, (src,))        # (..., T, T)
        nodes = [m]
        if mask == "keep":
            nodes.append(Node(f"{name}_keep", "Greater", {"constant": -0.5}, (m.name,)))
        return nodes + [Node(name, "DotProductAttention", attrs,
                             (src, src, src, nodes[-1].name))], sh
    return None, None  # pragma: no cover


def _window_out(hw, k, s, d, pad):
    out = []
    for ax in range(2):
        o, (lo, hi) = resolve_padding(hw[ax], k, s, d, pad, ax)
        if o < 1 or (max(lo, hi) >= k and pad != "valid" and k > 1):
            return None
        out.append(o)
    return tuple(out)


BAD_VALUES = [-1, 0, "x", None, 10 ** 9, [], {}, True, 3.5, [1, 2, 3], {"name": "nope"}]


def corrupt(draw, st, spec_json: dict) -> dict:
    """A copy of a spec's JSON with one attribute, name, input or key replaced by junk."""
    import copy
    d = copy.deepcopy(spec_json)
    nodes = d["model"]["nodes"]
    node = nodes[draw(st.integers(0, len(nodes) - 1))]
    what = draw(st.sampled_from(["attr", "new_attr", "name", "inputs", "op", "shape",
                                 "loss", "optimizer"]))
    bad = draw(st.sampled_from(BAD_VALUES))
    if what == "attr" and node["attrs"]:
        key = draw(st.sampled_from(sorted(node["attrs"])))
        node["attrs"][key] = bad
    elif what == "new_attr":
        node["attrs"]["bogus"] = bad
    elif what == "name":
        node["name"] = bad
    elif what == "inputs":
        node["inputs"] = bad
    elif what == "op":
        node["op"] = bad
    elif what == "shape":
        d["model"]["inputs"][0]["shape"] = bad
    elif what == "loss":
        d["loss"] = bad
    else:
        d["optimizer"]["learning_rate"] = bad
    return d
