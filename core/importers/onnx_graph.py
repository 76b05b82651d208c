"""Read an ONNX graph (opset 13 and later) and write the spec graph that computes the same
function (docs/design.md section 12).

* The input: the graph's one non-initializer input; a dynamic batch axis stays dynamic (the
  spec's Input has per-example axes only); every other axis must have a fixed size. Shapes of
  every tensor come from ONNX shape inference with the batch axis set to a concrete size (the
  input's own size where it is fixed, else 2); where it stops (a shape folded from a Range),
  from the same inference on that node alone, its inputs as the import holds them.
* Initializers are ``Const``s: the weight positions of Conv, Gemm, MatMul (the Linear pattern
  MatMul + Add of a (out,) initializer is one Dense), BatchNormalization and LayerNormalization
  read them as parameters (BatchNormalization's mean and variance as state), in canonical layout.
* Every node whose inputs are all constant (Constant, Shape of a tensor of known shape, and what
  is computed from them: the shape arithmetic of exporters) is folded by ``onnx.reference``;
  what depends on a dynamic batch size is marked so and only used where the batch axis is
  checked (a Reshape's target).
* Every other node goes through ``onnx_ops.ONNX_OPS``. An op type without a mapping, a node in
  another domain, or a node no mapping reproduces exactly gives one line naming the node and its
  op type; all are collected and refused together (``ImportRefused``) before anything is
  returned.
* A graph whose BatchNorm the exporter folded into the convolution (torch's exporters do in an
  eval export: the dynamo exporter leaves the BatchNorm module in the Conv node's metadata,
  TorchScript renames the folded kernel ``onnx::Conv_*``) computes the eval function only:
  ``inference_only`` says why, and training it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rosetta.errors import RosettaError
from rosetta.graph import Input, Model
from rosetta.importers.builder import Builder, Unsupported, Value, check_shapes, spec_name
from rosetta.importers.errors import ImportRefused
from rosetta.importers.merged import Merged
from rosetta.importers.onnx_merged import call as merged_call, shape_alt
from rosetta.importers.patterns import fuse, same_values
from rosetta.importers.onnx_ops import (ONNX_OPS, REFUSED, Const, ONode, Pending,
                                        _batch_rows, _is_parameter)

MIN_OPSET = 13
# ops whose output shape depends on the input's values: their handlers (and the patterns they
# start, ``onnx_ops.Pending``) give the shapes
DATA_SHAPED = {"NonZero"}
NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
           "Multinomial", "Bernoulli", "Dropout"}


def _sources(b, name, value, derived) -> frozenset:
    """The torch parameters an initializer holds, with the torch model given
    (``b.trainable``): a derived one's (``onnx_pairing``), a parameter's own name; else none."""
    if b.trainable is None:
        return frozenset()
    if name in derived:
        return frozenset(derived[name])
    v = np.asarray(value)
    return (frozenset({name}) if name in b.trainable and v.dtype.kind == "f" and v.size > 1
            else frozenset())


def _expands_initializer(b, node, args) -> bool:
    """An Expand of a float initializer (a parameter: ``onnx_ops._is_parameter``) to a shape
    that depends on the batch size (ViT's class token ``cls_token.expand(N, -1, -1)``), or a
    Gather of one at constant positions of shape (1, T...) or the same (1, T...) for every
    example (a position table at ``position_ids``, RoBERTa's token-type table at its buffered
    ids): not folded, the handler reads the initializer as a parameter."""
    if node.op_type == "Gather" and len(args) == 2 and _is_parameter(b, args[0]):
        ind = _batch_rows(args[1], getattr(b, "static_batch", None))
        return ind is not None and ind.ndim >= 1 and ind.shape[0] == 1
    return (node.op_type == "Expand" and len(args) == 2 and _is_parameter(b, args[0])
            and isinstance(args[1], Const) and args[1].batch_dependent)


@dataclass
class OnnxCaptured:
    graph: object             # rosetta Graph
    params: dict
    state: dict
    names: dict               # initializer name -> canonical path
    layouts: dict             # initializer name -> Layout
    node_source: dict         # spec node -> source label
    onnx_nodes: dict          # spec node -> (ONNX tensor name, layout, chw): where to read it
    input_name: str
    input_layout: str         # "nchw" or "plain"
    input_shape: tuple        # with the concrete batch size
    input_kind: str           # "float" or "int"
    output_name: str
    output_layout: str
    dtype: str                # "float32" or "float64"
    opset: int
    inference_only: str       # why training is refused ("" if it is not)
    training_graph: bool      # a BatchNormalization in training mode: the graph's function is
    #                           the spec's training-mode forward (batch statistics)
    unpaired: dict = None     # torch parameter -> why a constant moved from it stays a constant
    fused: dict = None        # patterns mapped to one layer op (patterns.fuse): counts


def load_model(source):
    """An ``onnx.ModelProto`` from a path or a model (a copy: the caller's is never changed)."""
    import onnx

    if isinstance(source, onnx.ModelProto):
        m = onnx.ModelProto()
        m.CopyFrom(source)
        return m
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ImportRefused([f"{source}: no such file"])
        try:
            return onnx.load(str(path))
        except Exception as e:
            raise ImportRefused([f"{source}: not an ONNX model ({type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:200]})"]) from None
    raise ImportRefused([f"<source> ({type(source).__name__}): give an ONNX file path or an "
                         f"onnx.ModelProto"])


def opset_of(model) -> int:
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 0


def _label(node, i) -> str:
    return f"{node.name or f'node {i}'} ({node.op_type})"


def _attrs(node) -> dict:
    import onnx

    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


def _dims(vi) -> list:
    """[int or None] of a value's static shape (None: symbolic or unknown); None if no shape."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def _elem_dtype(elem: int):
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(elem)


def _shapes(model, input_name: str, batch: int, kinds: dict | None = None) -> dict:
    """{tensor name: shape} by ONNX shape inference with the input's batch axis set to
    ``batch``; ``kinds`` (if given) gets {tensor name: NumPy dtype kind} of every tensor whose
    element type inference knows ("f", "i", "u", "b")."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    for vi in m.graph.input:
        if vi.name == input_name:
            vi.type.tensor_type.shape.dim[0].Clear()
            vi.type.tensor_type.shape.dim[0].dim_value = batch
    for vi in m.graph.output:
        if vi.type.tensor_type.HasField("shape") and len(vi.type.tensor_type.shape.dim):
            vi.type.tensor_type.shape.dim[0].Clear()
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception as e:
        raise ImportRefused([f"<graph>: ONNX shape inference fails ({type(e).__name__}: "
                             f"{' '.join(str(e).split())[:300]})"]) from None
    out = {}
    for vi in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input):
        if kinds is not None and vi.type.tensor_type.elem_type:
            kinds[vi.name] = np.dtype(_elem_dtype(vi.type.tensor_type.elem_type)).kind
        d = _dims(vi)
        if d is not None and all(x is not None for x in d):
            out[vi.name] = tuple(d)
    missing = [o for node in model.graph.node for o in node.output if o and o not in out]
    if missing:   # shapes inference cannot see (slice bounds computed from shapes): measured
        out.update(_measured_shapes(model, input_name, batch, missing))
    return out


def _measured_shapes(model, input_name: str, batch: int, names: list) -> dict:
    """{name: shape} of tensors by one ``onnx.reference`` run on a random batch of ``batch``
    (shapes do not depend on the input's values in a graph the importer maps: every shape
    computation is folded from Shape)."""
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for nm in names:
        if nm not in known:
            m.graph.output.append(helper.make_empty_tensor_value_info(nm))
    inp = next(vi for vi in m.graph.input if vi.name == input_name)
    dims = [batch] + [d.dim_value for d in inp.type.tensor_type.shape.dim[1:]]
    dtype = _elem_dtype(inp.type.tensor_type.elem_type)
    x = (np.zeros(dims, dtype) if np.dtype(dtype).kind in "iu"
         else np.random.default_rng(0).standard_normal(dims).astype(dtype))
    try:
        outs = ReferenceEvaluator(m).run(list(names), {input_name: x})
    except Exception:   # the nodes whose shape stays unknown are refused, each by name
        return {}
    return {nm: tuple(np.shape(v)) for nm, v in zip(names, outs)}


def to_double(model):
    """A copy of ``model`` computing in float64: every float initializer, Constant and tensor
    attribute cast to double, float inputs and outputs declared double, Cast-to-float made
    Cast-to-double, inferred value types dropped."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)

    def cast(t):
        if t.data_type in floats:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64),
                                               t.name))

    for t in m.graph.initializer:
        cast(t)
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.type.tensor_type.elem_type in floats:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    del m.graph.value_info[:]
    for node in m.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                cast(a.t)
            elif a.name in ("to", "dtype") and a.type == onnx.AttributeProto.INT \
                    and a.i in floats:
                a.i = TensorProto.DOUBLE
    return m


def _fold(node, values: list):
    """Run one node on constant inputs with ``onnx.reference``; a list of its outputs."""
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if v is not None else "" for i, v in enumerate(values)]
    outs = [f"out{i}" for i in range(len(node.output))]
    n = helper.make_node(node.op_type, names, outs, domain=node.domain)
    n.attribute.extend(node.attribute)
    inputs = [helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for nm, v in zip(names, values) if nm]
    g = helper.make_graph([n], "fold", inputs, [helper.make_empty_tensor_value_info(o)
                                                for o in outs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18 if node.op_type in (
        "Constant",) else 21)])
    m.ir_version = onnx.IR_VERSION
    feeds = {nm: v for nm, v in zip(names, values) if nm}
    return [np.asarray(o) for o in ReferenceEvaluator(m).run(None, feeds)]


def _weight_transposes(graph, consumers, outputs, trainable) -> dict:
    """{output: initializer} of the Transpose nodes that hold a 2-D float initializer (a
    parameter: of ``trainable`` where given) as a MatMul or Gemm weight: Transpose(perm=[1, 0])
    read only at input B of MatMul and Gemm nodes (a torch Linear's weight W (out, in), held so
    by ``onnx_pairing``). Not folded: the weight is read as the parameter in torch's layout."""
    inits = {i.name: i for i in graph.initializer}
    out = {}
    for node in graph.node:
        if node.op_type != "Transpose" or len(node.input) != 1 or node.input[0] not in inits:
            continue
        t = inits[node.input[0]]
        perm = [list(a.ints) for a in node.attribute if a.name == "perm"]
        if (len(t.dims) != 2 or perm not in ([], [[1, 0]])
                or _elem_dtype(t.data_type).kind != "f"
                or (trainable is not None and t.name not in trainable)):
            continue
        if _weight_only(graph, consumers, outputs, node.output[0]):
            out[node.output[0]] = t.name
    return out


def _weight_only(graph, consumers, outputs, name) -> bool:
    """Whether tensor ``name`` is read only as input B of MatMul and Gemm nodes, directly or
    through Identity nodes (TorchScript shares ALBERT's one layer's weights through them)."""
    users = consumers.get(name, [])
    if not users or name in outputs:
        return False
    for j in users:
        user = graph.node[j]
        ins = list(user.input)
        if user.op_type == "Identity":
            if not _weight_only(graph, consumers, outputs, user.output[0]):
                return False
        elif not (user.op_type in ("MatMul", "Gemm") and ins.count(name) == 1
                  and ins.index(name) == 1):
            return False
    return True


def _fused_linears(graph, consumers, outputs, transposes=None, derived=()) -> dict:
    """{MatMul node name-or-index: Add node index}: the Linear pattern MatMul(x, W) + b with W
    a 2-D initializer (or one of ``transposes``: W^T), b a (out,) initializer (not one of
    ``derived``, computed from torch parameters: the Add reads it) and the MatMul's output read
    by that Add only."""
    inits = {i.name: i for i in graph.initializer}
    transposes = transposes or {}
    fused = {}
    for i, node in enumerate(graph.node):
        if node.op_type != "MatMul" or len(node.input) != 2 or not (
                node.input[1] in inits or node.input[1] in transposes):
            continue
        out = node.output[0]
        users = consumers.get(out, [])
        if out in outputs or len(users) != 1:
            continue
        j = users[0]
        add = graph.node[j]
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        other = add.input[1] if add.input[0] == out else add.input[0]
        if node.input[1] in transposes:
            units = inits[transposes[node.input[1]]].dims[0]
        else:
            w = inits[node.input[1]]
            units = w.dims[1] if len(w.dims) == 2 else None
        if (other in inits and other not in derived and units is not None
                and list(inits[other].dims) == [units]):
            fused[i] = (j, other)
    return fused


def _inference_only(model) -> str:
    """Why the graph computes the eval function only ('' if it does not): a BatchNorm folded
    into a convolution by the exporter."""
    inits = {i.name for i in model.graph.initializer}
    folded = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        meta = " ".join(p.value for p in node.metadata_props
                        if p.key in ("namespace", "pkg.torch.onnx.class_hierarchy")).lower()
        renamed = (model.producer_name == "pytorch" and node.op_type == "Conv"
                   and len(node.input) > 1 and node.input[1] in inits
                   and node.input[1].startswith("onnx::"))
        if "batch_norm" in meta or "batchnorm" in meta or renamed:
            folded.append(node.name or node.op_type)
    if not folded:
        return ""
    return (f"the exporter folded a BatchNorm into {', '.join(folded[:3])}"
            f"{' and more' if len(folded) > 3 else ''} (an eval export): the graph computes the "
            f"eval function only, and training it would not be the source model's training "
            f"(export in training mode: torch.onnx.export(..., "
            f"training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False))")


def capture_onnx(source, *, model_name: str = "model", running_var: str = "biased",
                 exact: dict | None = None, trainable=None, derived=None) -> OnnxCaptured:
    """The spec graph, canonical parameters and name map of an ONNX model (see module doc).
    ``running_var``: BatchNorm's running-variance rule ("biased": ONNX's definition;
    "unbiased": torch's, where the torch model the graph came from is certified); ``exact``:
    {initializer name: {attribute: float64 value}} of that torch model (its BatchNorm momentum
    and epsilon, LayerNorm epsilon), used where the graph holds their float32 rounding;
    ``trainable``: that model's parameter names (None: every float initializer outside a weight
    position is a parameter; else only these, the others constants); ``derived``:
    {initializer: the torch parameters it was moved from} (``onnx_pairing``: gathered or
    concatenated), read as computed from them where a node reads it as an operand, as is a
    constant the import folds from such a parameter (``onnx_ops._derived_operand``)."""
    import onnx
    from onnx import numpy_helper

    model = load_model(source)
    opset = opset_of(model)
    if opset < MIN_OPSET:
        raise ImportRefused([f"<graph>: opset {opset or 'unknown'} (opset {MIN_OPSET} and later "
                             f"import; convert it with onnx.version_converter)"])
    graph = model.graph
    # constants are folded in float64 (the graph's float arithmetic on constants, a sqrt of a
    # head size, exact as the certificate's float64 reference computes it)
    double_nodes = list(to_double(model).graph.node)
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    real_inputs = [vi for vi in graph.input if vi.name not in inits]
    if len(real_inputs) != 1:
        raise ImportRefused([f"<graph>: {len(real_inputs)} inputs "
                             f"({', '.join(v.name for v in real_inputs)}; the spec's model takes "
                             f"one)"])
    if len(graph.output) != 1:
        raise ImportRefused([f"<graph>: {len(graph.output)} outputs (the spec trains a model "
                             f"with one output)"])
    inp = real_inputs[0]
    dims = _dims(inp)
    if not dims or any(d is None for d in dims[1:]):
        raise ImportRefused([f"input {inp.name}: shape {dims} (every axis but the batch needs a "
                             f"fixed size)"])
    np_dtype = _elem_dtype(inp.type.tensor_type.elem_type)
    batch = dims[0] if dims[0] is not None else 2
    shape_in = (batch, *dims[1:])
    kinds: dict = {}
    shapes = _shapes(model, inp.name, batch, kinds)
    shapes[inp.name] = shape_in
    for k, v in inits.items():
        kinds.setdefault(k, v.dtype.kind)
    float_inits = {str(v.dtype) for v in inits.values() if v.dtype.kind == "f"}
    dtype = ("float64" if np_dtype == np.float64 or float_inits == {"float64"} else "float32")
    if np.dtype(np_dtype).kind == "f":
        if len(shape_in) == 4:
            x = Input(tuple(shape_in[2:]) + (shape_in[1],), name="x")
            layout = "nchw"
        else:
            x = Input(tuple(shape_in[1:]), name="x")
            layout = "plain"
        kind = "float"
    elif np.dtype(np_dtype).kind in "iu":
        x, layout, kind = Input(tuple(shape_in[1:]), name="x", kind="int"), "plain", "int"
    else:
        raise ImportRefused([f"input {inp.name}: element type {np.dtype(np_dtype)} (float or "
                             f"int)"])
    b = Builder({k: v for k, v in inits.items()})
    b.running_var = running_var
    b.batch, b.dynamic_batch = batch, dims[0] is None   # (a merged batch: ``onnx_merged``)
    b.static_batch = dims[0]
    b.exact = exact or {}
    b.trainable = None if trainable is None else set(trainable)
    derived = dict(derived or {})
    consumers: dict = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    graph_outputs = {o.name for o in graph.output}
    transposes = _weight_transposes(graph, consumers, graph_outputs, b.trainable)
    # an initializer read by several nodes (ALBERT's one layer at every depth, GPT-2's tied
    # embedding table and LM head): one Parameter node that every use reads
    # (``onnx_ops._shared_operand``)
    alias, uses = {}, {}   # an Identity of an initializer is the initializer (TorchScript's
    for node in graph.node:   # ALBERT shares a weight through one), a weight Transpose of it
        root = alias.get(node.input[0], node.input[0]) if node.input else None
        if node.op_type == "Identity" and root in inits:
            alias[node.output[0]] = root
            continue
        if node.output and node.output[0] in transposes:
            alias[node.output[0]] = transposes[node.output[0]]
            continue
        for name in {alias.get(k, k) for k in node.input}:
            if name in inits:
                uses[name] = uses.get(name, 0) + 1
            for q in derived.get(name, ()):   # a parameter read through a derived constant
                uses[q] = uses.get(q, 0) + 1
    b.shared = {k for k, c in uses.items() if c > 1 and np.asarray(inits[k]).dtype.kind == "f"
                and np.asarray(inits[k]).size > 1}
    env: dict = {k: Const(v, k, sources=_sources(b, k, v, derived)) for k, v in inits.items()}
    env[inp.name] = Value(x, layout, shape_in)
    env[""] = None
    fused = _fused_linears(graph, consumers, graph_outputs, transposes, derived)
    skip = {j: i for i, (j, _) in fused.items()}
    refusals: dict = {}
    onnx_nodes: dict = {}
    missing = object()

    def refuse(label, reason):
        refusals.setdefault(label, []).append(reason)

    for i, node in enumerate(graph.node):
        label = _label(node, i)
        if i in skip:   # the Add of a fused Linear: the MatMul's Dense has computed it
            src = graph.node[skip[i]].output[0]
            env[node.output[0]] = env.get(src, missing)
            continue
        if node.domain not in ("", "ai.onnx"):
            refuse(label, f"an op of domain {node.domain!r} (the default ONNX domain only)")
            _mark(env, node, missing)
            continue
        args = [env.get(name, missing) for name in node.input]
        attrs = _attrs(node)
        if node.op_type in REFUSED:
            try:
                REFUSED[node.op_type](b, ONode(node.op_type, [], attrs, "", label, ()))
            except Unsupported as e:
                refuse(label, str(e))
            _mark(env, node, missing)
            continue
        if any(a is missing for a in args):
            _mark(env, node, missing)   # an input was refused already: its line names it
            continue
        if node.op_type == "Shape" and isinstance(args[0], (Value, Merged)):
            full = np.array(args[0].shape, np.int64)
            start, end = attrs.get("start", 0), attrs.get("end", None)
            part = full[start:end].copy()
            alt = shape_alt(args[0])[start:end] if dims[0] is None else None
            if alt is not None and np.array_equal(alt, part):
                alt = None   # (alt: the same shape at another batch size, where it differs)
            env[node.output[0]] = Const(part, None, batch_dependent=alt is not None, alt=alt)
            continue
        if node.op_type == "Identity" and isinstance(args[0], Const) and args[0].name:
            env[node.output[0]] = args[0]   # the initializer itself, under another name
            continue
        if node.output[0] in transposes:   # W^T as a weight: the parameter W, read transposed
            w = np.asarray(inits[transposes[node.output[0]]])
            env[node.output[0]] = Const(w.T, transposes[node.output[0]], transposed=True)
            continue
        if (node.op_type not in NO_FOLD and not _expands_initializer(b, node, args)
                and all(a is None or isinstance(a, Const) for a in args)):
            try:
                outs = _fold(double_nodes[i], [_f64(a.value) if a is not None else None
                                               for a in args])
            except Exception as e:
                refuse(label, f"cannot fold this constant node ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]})")
                _mark(env, node, missing)
                continue
            alts = [None] * len(outs)
            if any(a is not None and a.alt is not None for a in args):
                # folded again at another batch size: what differs depends on the batch size
                try:
                    alts = _fold(double_nodes[i], [None if a is None else _f64(
                        a.alt if a.alt is not None else a.value) for a in args])
                except Exception:
                    alts = [np.array(np.nan)] * len(outs)   # taken as batch-dependent
            src = (frozenset() if node.op_type in ("Shape", "Size") else   # (values moved)
                   frozenset().union(*(a.sources for a in args if a is not None)))
            for name, v, w in zip(node.output, outs, alts):
                dep = w is not None and (np.shape(v) != np.shape(w)
                                         or not np.array_equal(v, w))
                env[name] = Const(v, None, batch_dependent=dep, alt=w if dep else None,
                                  sources=src)
            continue
        handler = ONNX_OPS.get(node.op_type)
        if handler is None:
            refuse(label, f"unsupported ONNX op {node.op_type} (no spec op reproduces it)")
            _mark(env, node, missing)
            continue
        out0 = node.output[0]
        used = [k for k, o in enumerate(node.output)
                if o and (o in consumers or o in graph_outputs)]
        n = ONode(node.op_type, args, attrs, spec_name(node.name or f"{node.op_type}_{i}"),
                  label, shapes.get(out0, ()), used)
        n.attrs["_output_shapes"] = [shapes.get(o, ()) for o in node.output]
        n.attrs["_input_kinds"] = [kinds.get(k, "") for k in node.input]
        n.attrs["_output_kinds"] = [kinds.get(o, "") for o in node.output]
        if i in fused:
            j, bias = fused[i]
            n.attrs["_fused_bias"] = bias
            n.attrs["_fused_shape"] = shapes.get(graph.node[j].output[0], ())
            n.label = f"{label} + {_label(graph.node[j], j)}"
        pending = node.op_type in DATA_SHAPED or any(isinstance(a, Pending) for a in args)
        if not n.shape and not pending and node.op_type not in ("Identity",):
            # inference stopped before this node (a shape it could not propagate): inferred
            # again from the node's own inputs as the import holds them
            got = _node_shapes(node, args, kinds)
            shapes.update({o: s for o, s in got.items() if s})
            n.shape = shapes.get(out0, ())
            n.attrs["_output_shapes"] = [shapes.get(o, ()) for o in node.output]
        if not n.shape and not pending and node.op_type not in ("Identity",):
            refuse(label, f"the shape of {out0} is unknown after ONNX shape inference")
            _mark(env, node, missing)
            continue
        try:
            if any(isinstance(a, Merged) for a in args):   # a batch merged with other rows
                v = merged_call(b, handler, n)
            else:
                v = handler(b, n)
        except (Unsupported, RosettaError) as e:   # RosettaError: the spec op's own check
            refuse(label, str(e))
            _mark(env, node, missing)
            continue
        vs = list(v) if isinstance(v, (list, tuple)) else [v]   # Split: one Value an output
        for k, o in enumerate(node.output):
            env[o] = vs[k] if k < len(vs) else missing
            if k >= len(vs) or not isinstance(vs[k], (Value, Merged)):   # a Const, a Pending
                continue
            if not shapes.get(o):
                shapes[o] = tuple(vs[k].shape)
            held = vs[k].inner if isinstance(vs[k], Merged) else vs[k]
            if isinstance(vs[k], Merged) and vs[k].at:
                continue   # (a merged axis moved off axis 0: read by the nodes after it)
            layer = getattr(getattr(held.tensor, "source", None), "layer", None)
            if layer is not None and layer.name not in onnx_nodes:
                tensor = graph.node[fused[i][0]].output[0] if i in fused else o
                onnx_nodes[layer.name] = ((tensor, "merged", (vs[k].k, held.perm))
                                          if isinstance(vs[k], Merged)
                                          else (tensor, vs[k].layout, vs[k].chw))
    out_name = graph.output[0].name
    out = env.get(out_name, missing)
    lines = [f"{k}: {'; '.join(dict.fromkeys(v))}" for k, v in refusals.items()]
    if not lines and isinstance(out, Pending):
        lines.append(f"output {out_name}: {out.refusal}")
    if not lines and isinstance(out, Merged):
        lines.append(f"output {out_name}: its batch axis is merged with other rows "
                     f"({out.shape}, {out.k} rows per example; reshape it back to the batch)")
    if not lines and isinstance(out, Const):
        lines.append(f"output {out_name}: a constant (it does not depend on the input)")
    if not lines and isinstance(out, Value) and out.layout == "flat":
        lines.append(f"output {out_name}: a channels-first flatten (only a Gemm or MatMul may "
                     f"read it)")
    if lines:
        raise ImportRefused(lines)
    if out.tensor is x:
        raise ImportRefused(["<graph>: the model computes nothing"])
    try:
        g = Model(x, out.tensor, name=_model_name(model_name))
    except RosettaError as e:   # a spec op's own check, named by its node (and ONNX node)
        raise ImportRefused([f"<graph>: {e}"]) from None
    try:
        check_shapes(g, b)
    except Unsupported as e:
        raise ImportRefused([f"<graph>: {e}"]) from None
    fused_g, fused = fuse(g)   # written-out GELUs and attention to the layer op, Dropout(0) gone
    if fused:   # the certificate compares a node with its ONNX tensor only where it is the same
        kept = same_values(g, fused_g)
        onnx_nodes = {k: v for k, v in onnx_nodes.items() if k in kept}
    g = fused_g
    return OnnxCaptured(g, b.params, b.state, b.names, b.layouts, b.node_source, onnx_nodes,
                        inp.name, layout, shape_in, kind, out_name, out.layout, dtype, opset,
                        _inference_only(model), _training_graph(model),
                        dict(b.__dict__.get("derive_failed", {})), fused)


def _node_shapes(node, args, kinds) -> dict:
    """{output name: shape} of one node by ONNX shape inference on that node alone, its
    computed inputs typed with the shapes the import holds and its constant inputs as
    initializers (what whole-graph inference could not propagate: a Reshape to a shape folded
    from a Range, a Gemm after a pattern the importer maps); {} where it cannot say."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = {"f": TensorProto.FLOAT, "i": TensorProto.INT64, "u": TensorProto.INT64,
            "b": TensorProto.BOOL}
    names, inputs, inits = [], [], []
    for i, a in enumerate(args):
        nm = f"in{i}" if a is not None else ""
        names.append(nm)
        if isinstance(a, Value):
            inputs.append(helper.make_tensor_value_info(
                nm, elem.get(kinds.get(node.input[i], "f"), TensorProto.FLOAT), list(a.shape)))
        elif isinstance(a, Const):
            inits.append(numpy_helper.from_array(np.asarray(a.value), nm))
        elif a is not None:
            return {}
    outs = [f"out{i}" for i in range(len(node.output))]
    n = helper.make_node(node.op_type, names, outs)
    n.attribute.extend(node.attribute)
    g = helper.make_graph([n], "shape", inputs, [helper.make_empty_tensor_value_info(o)
                                                 for o in outs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = onnx.IR_VERSION
    try:
        m = onnx.shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:
        return {}
    got = {}
    for vi in list(m.graph.output) + list(m.graph.value_info):
        d = _dims(vi)
        if vi.name in outs and d is not None and all(x is not None for x in d):
            got[node.output[outs.index(vi.name)]] = tuple(d)
    return got


def _training_graph(model) -> bool:
    """Whether the graph computes a training-mode forward: a BatchNormalization in training
    mode (batch statistics; ``training_mode=1``), or a Dropout whose ``training_mode`` input is
    a constant True (it draws its mask: the certificate sets every ratio to 0 on both sides)."""
    import onnx
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        if node.op_type == "Dropout" and len(node.input) > 2 and node.input[2] in consts \
                and bool(np.asarray(consts[node.input[2]]).reshape(-1)[0]):
            return True   # a dropout drawing its mask: the training-mode forward
        if node.op_type != "BatchNormalization":
            continue
        for a in node.attribute:
            if a.name == "training_mode" and onnx.helper.get_attribute_value(a):
                return True
    return False


def _f64(v):
    v = np.asarray(v)
    return v.astype(np.float64) if v.dtype.kind == "f" else v


def _mark(env, node, value):
    for o in node.output:
        env[o] = value


def _model_name(name: str) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9_]", "_", name) or "model"
    return name if re.match(r"[A-Za-z_]", name) else f"m_{name}"
