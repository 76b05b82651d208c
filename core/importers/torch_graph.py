"""Capture a ``torch.nn.Module`` with ``torch.export`` and write the spec graph that computes the
same function (docs/design.md section 12).

The module is exported twice, in training and in eval mode (``torch.export`` freezes
``self.training`` into the graph): both graphs must make the same calls, apart from the
training flags of dropout, or the import is refused. Every node keeps its source name: the
innermost module of its ``nn_module_stack`` (``layer1.0.conv1 (Conv2d)``), or the fx node's
name for a call in a ``forward`` itself; parameters keep their ``state_dict`` names.

Mapping: a call inside a module whose class has a user mapping (``maps``) goes, with every
other call of that module, to that mapping; every other call goes through ``torch_ops.ATEN``.
What no mapping reproduces exactly is collected, one line per source module, and refused
together (``ImportRefused``) before anything is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rosetta.graph import Input, Model
from rosetta.importers.builder import Builder, ModuleBuilder, Unsupported, Value, check_shapes
from rosetta.importers.errors import ImportRefused
from rosetta.importers.patterns import fuse
from rosetta.importers.torch_fold import Folded, as_value, fold
from rosetta.importers.torch_merged import Merged, call as merged_call, flat_args
from rosetta.importers.torch_ops import (ATEN, BROADCASTING, ELEMENTWISE, Call,
                                         batch_norm_module_refusal, reader_refusal)

# user mappings: module class -> function(module, *inputs, b) -> Value
MAPS: dict = {}


def maps(cls):
    """Register a mapping for your own module class::

        @rosetta.importers.maps(MyBlock)
        def my_block(module, x, b):      # b: a ModuleBuilder (names relative to the module)
            ...
            return value

    Every call the traced graph makes inside a ``MyBlock`` (its submodules included) goes to
    this function instead of the built-in table; the block must have one output."""
    def register(fn):
        MAPS[cls] = fn
        return fn
    return register


def drop_path_rate(module) -> tuple | None:
    """``(attribute, rate, refusal)`` of a stochastic-depth module (torchvision's
    ``StochasticDepth``, timm's ``DropPath``): the attribute holding its drop probability, the
    probability, and the refusal line of a variant the spec's ``StochasticDepth`` does not
    compute (None if it does); None for any other module."""
    cls = type(module)
    where = f"{cls.__module__}.{cls.__name__}"
    if where == "torchvision.ops.stochastic_depth.StochasticDepth":
        bad = None if module.mode == "row" else (
            f"StochasticDepth(mode={module.mode!r}) (one draw for the whole batch; the spec's "
            f"StochasticDepth draws one per example, mode 'row')")
        return "p", float(module.p), bad
    if cls.__name__ == "DropPath" and cls.__module__.startswith("timm."):
        bad = None if getattr(module, "scale_by_keep", True) else (
            "DropPath(scale_by_keep=False) (the kept examples are not scaled by 1 / (1 - p))")
        return "drop_prob", float(module.drop_prob), bad
    return None


def _stochastic_depth(module, x, b):
    """A stochastic-depth module -> ``StochasticDepth(rate)`` (built-in mapping)."""
    _, rate, bad = drop_path_rate(module)
    if bad:
        raise Unsupported(bad)
    return b.layer("StochasticDepth", [x], name="", rate=rate)


def _multihead_attention(module, *args):
    """torch's ``nn.MultiheadAttention`` used as self-attention, ``mha(x, x, x)`` with
    ``batch_first=True`` (built-in mapping), written out as its math on (N, T, E):

        qkv = x W_in^T + b_in                (Dense, 3E units: in_proj_weight is the kernel)
        q, k, v = qkv[..., :E], qkv[..., E:2E], qkv[..., 2E:]   each -> (h, T, d), d = E / h
        w = softmax(q k^T / sqrt(d)) over the keys   (Dropout(p) on w where ``dropout`` > 0)
        y = concat_h(w v) W_out^T + b_out     (Dense: out_proj)

    The packed projection stays one parameter (a Dense of 3E units sliced three ways), so every
    source parameter keeps one canonical path. Refused in one line: another query, key or value
    (cross-attention), an attention or key-padding mask, ``batch_first=False`` (the batch on
    axis 1), separate or ``kdim``/``vdim`` projections, ``add_bias_kv``, ``add_zero_attn``."""
    *inputs, b = args
    why = []
    if not module.batch_first:
        why.append("batch_first=False (the batch on axis 1; build it with batch_first=True)")
    if not module._qkv_same_embed_dim:
        why.append("kdim/vdim other than embed_dim (separate q, k, v projections)")
    if module.bias_k is not None or module.add_zero_attn:
        why.append("add_bias_kv / add_zero_attn")
    if len(inputs) != 1:
        why.append("a call with a query, key and value that differ, or with an attention or "
                   "key-padding mask (only self-attention mha(x, x, x) maps)")
    if why:
        raise Unsupported(f"nn.MultiheadAttention: {'; '.join(why)}")
    x = inputs[0]
    e, h = module.embed_dim, module.num_heads
    d = e // h
    if x.layout != "plain" or len(x.shape) != 3 or x.shape[-1] != e:
        raise Unsupported(f"nn.MultiheadAttention on a tensor of shape {x.shape} (held "
                          f"{x.layout}): only (N, T, E) with the batch first")
    t = x.shape[1]
    bias = module.in_proj_bias is not None
    qkv = b.layer("Dense", [x], name="in_proj", units=3 * e, use_bias=bias,
                  params={"kernel": ("in_proj_weight", "linear"),
                          **({"bias": ("in_proj_bias", "identity")} if bias else {})})
    heads = []
    for i, part in enumerate("qkv"):
        y = b.layer("Slice", [qkv], name=part, axes=(-1,), starts=(i * e,),
                    stops=((i + 1) * e,), steps=(1,))
        y = b.layer("Reshape", [y], name=f"{part}_heads", shape=(t, h, d))
        heads.append(b.layer("Transpose", [y], name=f"{part}_by_head",
                             perm=(1, 2, 0) if part == "k" else (1, 0, 2)))
    q, kt, v = heads
    s = b.layer("MatMul", [q, kt], name="scores")
    s = b.layer("Multiply", [s], name="scale", constant=1.0 / float(d) ** 0.5)
    w = b.layer("Softmax", [s], name="softmax", axis=-1)
    if module.dropout > 0:
        w = b.layer("Dropout", [w], name="attn_dropout", rate=float(module.dropout))
    o = b.layer("MatMul", [w, v], name="attend")
    o = b.layer("Transpose", [o], name="by_position", perm=(1, 0, 2))
    o = b.layer("Reshape", [o], name="concat", shape=(t, e))
    out_bias = module.out_proj.bias is not None
    return b.layer("Dense", [o], name="out_proj", units=e, use_bias=out_bias,
                   params={"kernel": ("out_proj.weight", "linear"),
                           **({"bias": ("out_proj.bias", "identity")} if out_bias else {})})


def _mapping(module):
    """The mapping of a module's calls as one group: a user's (``maps``), or a built-in one
    (stochastic depth, whose random mask no ATen call maps; nn.MultiheadAttention as
    self-attention),
    or None."""
    import torch

    fn = MAPS.get(type(module))
    if fn is None and drop_path_rate(module) is not None:
        fn = _stochastic_depth
    if fn is None and isinstance(module, torch.nn.MultiheadAttention):
        fn = _multihead_attention
    return fn


@dataclass
class Captured:
    graph: object             # rosetta Graph
    params: dict
    state: dict
    names: dict               # source name -> canonical path
    layouts: dict             # source name -> Layout
    node_source: dict         # spec node -> source label
    input_layout: str         # "nchw" or "plain"
    ignored_buffers: list     # source buffers the spec has no state for
    fx_nodes: dict            # spec node -> (fx node name, layout, chw): where to read it
    constant_buffers: tuple = ()   # buffers read only as constants (torch_fold)
    folded: int = 0                # how many calls were folded
    fused: dict = None             # patterns mapped to one layer op (patterns.fuse): counts


def _short(type_str: str) -> str:
    return str(type_str).rsplit(".", 1)[-1].rstrip("'>")


def _label(path: str, type_str) -> str:
    return f"{path or '<root>'} ({_short(type_str)})"


def _stack(node) -> list:
    """[(path, type)] from the outermost module to the innermost (the root excluded)."""
    st = node.meta.get("nn_module_stack") or {}
    out = []
    for v in st.values():
        path, typ = v[0], v[1]
        path = path.replace("L['self'].", "").replace("L__self__.", "")
        if path:
            out.append((path, typ))
    return out


def _export(module, example_inputs, training: bool):
    import torch

    was = module.training
    try:
        module.train(training)
    except NotImplementedError as e:  # torch.export's own modules (a .pt2's ep.module())
        raise ImportRefused([f"<root> ({type(module).__name__}): cannot be switched between "
                             f"training and eval mode ({e}); the importer captures both: "
                             f"import the nn.Module itself"]) from None
    try:
        return torch.export.export(module, tuple(example_inputs))
    except Exception as e:  # the user's model: one line naming torch.export's reason
        msg = " ".join(str(e).split())[:400]
        raise ImportRefused([f"<root> ({type(module).__name__}): torch.export cannot capture "
                             f"the model in {'training' if training else 'eval'} mode: "
                             f"{type(e).__name__}: {msg}"]) from None
    finally:
        module.train(was)


def _signature(ep, modules) -> list:
    """The calls of an exported graph, with the flags that only say training or eval removed
    (and the calls of a stochastic-depth module, which draws its mask in training only)."""
    sig = []
    for n in ep.graph.nodes:
        if n.op != "call_function":
            continue
        if any(p in modules and drop_path_rate(modules[p]) is not None for p, _ in _stack(n)):
            continue
        t = str(n.target)
        if t == "aten.add_.Tensor" and n.args and str(n.args[0].name).startswith("b_"):
            continue  # BatchNorm's num_batches_tracked, training only
        st = _stack(n)
        sig.append((t, st[-1] if st else ("", "")))
    return sig


def _eval_difference(module, ep_train, ep_eval):
    """A refusal line where the eval-mode graph makes other calls than the training one."""
    modules = dict(module.named_modules())
    sig_t, sig_e = _signature(ep_train, modules), _signature(ep_eval, modules)
    if sig_t == sig_e:
        return None
    i = next((k for k, (a, b) in enumerate(zip(sig_t, sig_e)) if a != b),
             min(len(sig_t), len(sig_e)))
    a = sig_t[i] if i < len(sig_t) else ("nothing", ("", ""))
    b = sig_e[i] if i < len(sig_e) else ("nothing", ("", ""))
    path, typ = a[1] if a[1][0] else b[1]
    label = _label(path, typ or type(module).__name__)
    return (f"{label}: unsupported {'module' if path else 'call'}: it computes a different graph "
            f"in eval mode ({a[0]} in training, {b[0]} in eval; the spec has one graph for both)")


def _counts_batches(n, to_buffer: dict) -> bool:
    """An in-place add to a buffer: BatchNorm's ``num_batches_tracked += 1``, which the spec has
    no use for (it is not a call of its own: the module's node keeps the module's name)."""
    return (str(n.target) == "aten.add_.Tensor" and bool(n.args)
            and getattr(n.args[0], "name", "") in to_buffer)


def to_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def capture(module, example_inputs, *, model_name: str = "model") -> Captured:
    """The spec graph, canonical parameters and name map of ``module`` (see module doc)."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ImportRefused([f"<source> ({type(module).__name__}): not a torch.nn.Module"])
    if not isinstance(example_inputs, (list, tuple)):
        example_inputs = (example_inputs,)
    if len(example_inputs) != 1 or not isinstance(example_inputs[0], torch.Tensor):
        raise ImportRefused([f"<root> ({type(module).__name__}): the spec's certificate takes a "
                             f"model with one tensor input; got {len(example_inputs)} inputs"])
    untraceable = [f"{_label(path, type(m))}: unsupported module: {line}"
                   for path, m in module.named_modules()
                   if (line := batch_norm_module_refusal(m)) is not None]
    if untraceable:  # torch.export cannot capture these: say why, before it fails
        raise ImportRefused(untraceable)
    ep_train = _export(module, example_inputs, True)
    ep_eval = _export(module, example_inputs, False)
    sig = ep_train.graph_signature
    to_param = dict(sig.inputs_to_parameters)
    to_buffer = dict(sig.inputs_to_buffers)
    to_constant = dict(getattr(sig, "inputs_to_lifted_tensor_constants", {}) or {})
    user_inputs = set(sig.user_inputs)
    tensors = {n: to_numpy(p) for n, p in module.named_parameters()}
    tensors.update({n: to_numpy(b) for n, b in module.named_buffers()})
    b = Builder(tensors)
    b.dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    # tied parameters (GPT-2's wte = lm_head): one tensor under several names; the graph names
    # one of them; the importer uses the first (``named_parameters``'s) for all
    first = {}
    for k, p in module.named_parameters(remove_duplicate=False):
        first.setdefault(id(p), k)
    alias = {k: first[id(p)] for k, p in module.named_parameters(remove_duplicate=False)}
    to_param = {k: alias.get(v, v) for k, v in to_param.items()}
    modules = dict(module.named_modules())
    refusals: dict[str, list] = {}
    env: dict = {}
    fx_nodes: dict = {}
    placeholders = {}
    graph_input = None
    buffers = dict(module.named_buffers())
    constants = {k: buffers[v] for k, v in to_buffer.items() if v in buffers}
    constants.update({k: ep_train.constants[v] for k, v in to_constant.items()
                      if v in ep_train.constants})
    folded = fold(ep_train.graph.nodes, constants)
    const_nodes: dict = {}
    batch = int(example_inputs[0].shape[0]) if example_inputs[0].dim() else 1
    b.batch = batch
    b.param_names = set(to_param.values())
    # buffers no call updates in place (read as constants where a call needs their value)
    mutated = {n.args[0].name for n in ep_train.graph.nodes if n.op == "call_function"
               and str(n.target).split(".")[1:2] and str(n.target).split(".")[1].endswith("_")
               and n.args and isinstance(n.args[0], torch.fx.Node)}
    b.constant_buffers = {v for k, v in to_buffer.items() if k not in mutated}

    def refuse(label, kind, reason):
        refusals.setdefault(f"{label}: unsupported {kind}", []).append(reason)

    nodes = list(ep_train.graph.nodes)
    users = {n.name: list(n.users) for n in nodes}
    # a parameter read by several calls (a tied embedding and output projection) is one
    # ``Parameter`` node that each call reads (``torch_ops.shared_parameter``)
    b.shared = {to_param[n.name] for n in nodes
                if n.op == "placeholder" and n.name in to_param and len(users[n.name]) > 1}
    calls_in = {}
    for n in nodes:
        if n.op == "call_function" and _stack(n) and not _counts_batches(n, to_buffer):
            calls_in[_stack(n)[-1][0]] = calls_in.get(_stack(n)[-1][0], 0) + 1
    for n in nodes:
        if n.op == "placeholder":
            if n.name in to_param:
                placeholders[n.name] = to_param[n.name]
            elif n.name in to_buffer:
                placeholders[n.name] = to_buffer[n.name]
            elif n.name not in user_inputs:
                continue   # a constant lifted by torch.export: read where it folds
            else:
                x = example_inputs[0]
                shape = tuple(x.shape)
                if x.dtype.is_floating_point and x.dim() == 4:
                    graph_input = Input(shape[2:] + shape[1:2], name="x")
                    env[n.name] = Value(graph_input, "nchw", shape)
                elif x.dtype.is_floating_point:
                    graph_input = Input(shape[1:], name="x")
                    env[n.name] = Value(graph_input, "plain", shape)
                elif x.dtype in (torch.int64, torch.int32):
                    graph_input = Input(shape[1:], name="x", kind="int")
                    env[n.name] = Value(graph_input, "plain", shape)
                else:
                    raise ImportRefused([f"<root> ({type(module).__name__}): input of dtype "
                                         f"{x.dtype}"])
    # calls grouped under a user-mapped module
    groups = {}
    for n in nodes:
        if n.op == "call_function":
            for path, typ in _stack(n):
                m = modules.get(path)
                if m is not None and _mapping(m) is not None:
                    groups.setdefault(path, []).append(n)
                    break
    group_of = {n.name: path for path, ns in groups.items() for n in ns}
    done_groups = set()
    output_node = None
    for n in nodes:
        if n.op == "output":
            output_node = n
            continue
        if n.op != "call_function":
            continue
        if n.name in folded:
            env[n.name] = folded[n.name]
            continue
        st = _stack(n)
        path, typ = st[-1] if st else ("", type(module).__name__)
        label = _label(path, typ)
        if n.name in group_of:
            gpath = group_of[n.name]
            if gpath in done_groups:
                continue
            done_groups.add(gpath)
            out_fx = _map_group(b, modules[gpath], gpath, groups[gpath], env, placeholders,
                                refuse)
            if out_fx is not None:
                _note(fx_nodes, env[out_fx], out_fx)
            continue

        def resolve(a):
            if isinstance(a, torch.fx.Node):
                if a.name in placeholders:
                    return placeholders[a.name]
                return env.get(a.name, _Missing)
            if isinstance(a, (list, tuple)):
                return type(a)(resolve(x) for x in a)
            return a

        target = str(n.target)
        if _counts_batches(n, to_buffer):
            continue  # BatchNorm's num_batches_tracked counter (the BatchNorm call decides)
        if target.startswith("aten._assert") and not users[n.name]:
            continue  # a check of the traced dtype/shape (T5's on folded buckets): nothing
        args = [resolve(a) for a in n.args]
        kwargs = {k: resolve(v) for k, v in n.kwargs.items()}
        target = str(n.target)
        takes_folded = getattr(ATEN.get(target), "takes_folded", None)
        if takes_folded is not None:   # a handler that reads a folded operand itself
            args = [takes_folded(a) for a in args]
            kwargs = {k: takes_folded(v) for k, v in kwargs.items()}
        if (_has_folded(args) or _has_folded(list(kwargs.values()))) and not (
                _has_missing(args) or _has_missing(list(kwargs.values()))):
            operands = [v.inner if isinstance(v, Merged) else v
                        for v in flat_args(args + list(kwargs.values()))
                        if isinstance(v, (Value, Merged))]
            rank = max([len(v.shape) for v in operands], default=0) \
                if target in BROADCASTING else 0
            # a constant broadcast against a tensor held with its axes permuted (RoPE's cos
            # table times q held as (N, T, H, D)) is held in that order too
            held = {v.layout for v in operands if len(v.shape) == rank}
            perm = next(iter(held)) if target in ELEMENTWISE and len(held) == 1 and \
                isinstance(next(iter(held)), tuple) else None

            def constant(a):
                if isinstance(a, Folded):
                    return as_value(b, a, rank, batch, path or n.name, label, const_nodes,
                                    perm=perm)
                if isinstance(a, (list, tuple)):
                    return type(a)(constant(x) for x in a)
                return a
            try:
                args = [constant(a) for a in args]
                kwargs = {k: constant(v) for k, v in kwargs.items()}
            except Unsupported as e:
                refuse(label, "module" if path else "call", str(e))
                continue
        if _has_missing(args) or _has_missing(list(kwargs.values())):
            handler = ATEN.get(target)
            check = getattr(handler, "check_constants", None)
            if getattr(handler, "static", False) or check:  # refused whatever the inputs
                try:
                    if check:
                        check(Call(target, list(args), kwargs, n.name, label, (), {}))
                    else:
                        handler(b, None)
                except Unsupported as e:
                    refuse(label, "module" if path else "call", str(e))
            continue  # an input was refused already: its own line names it
        if target == "<built-in function getitem>" or target.endswith("getitem"):
            src = args[0]
            if isinstance(src, tuple):
                try:
                    env[n.name] = src[args[1]]
                except Unsupported as e:
                    if n.users:   # (an output nothing reads, as a max pool's indices, is fine)
                        refuse(label, "module" if path else "call", str(e))
                    continue
                _note(fx_nodes, env[n.name], n.name)
            continue
        handler = ATEN.get(target)
        val = n.meta.get("val")
        shape = tuple(val.shape) if hasattr(val, "shape") else ()
        kind = "module" if path else "call"
        if handler is not None and any(isinstance(v, Merged)
                                       for v in flat_args(args + list(kwargs.values()))):
            name = path if path else n.name   # a reader of a merged-batch tensor
            if path and calls_in.get(path, 0) > 1:
                name = f"{path}.{n.name}"
            try:
                env[n.name] = merged_call(b, handler, Call(target, args, kwargs, name, label,
                                                           shape, placeholders))
            except Unsupported as e:
                refuse(label, kind, str(e))
                continue
            _note(fx_nodes, env[n.name], n.name)
            continue
        line = reader_refusal(target, flat_args(args + list(kwargs.values())))
        if line:
            refuse(label, "module" if path else "call", line)
            continue
        if handler is None:
            if not users[n.name] and target.startswith("aten._assert"):
                continue
            refuse(label, kind, f"{target} (no spec op reproduces it)")
            continue
        name = path if path else n.name
        if path and calls_in.get(path, 0) > 1:
            name = f"{path}.{n.name}"
        try:
            env[n.name] = handler(b, Call(target, args, kwargs, name, label, shape, placeholders))
        except Unsupported as e:
            refuse(label, kind, str(e))
            continue
        _note(fx_nodes, env[n.name], n.name)
    outs = output_node.args[0] if output_node is not None else ()
    out_vals = []
    for o in outs:
        v = env.get(getattr(o, "name", None), _Missing)
        if v is not _Missing:
            out_vals.append(v)
            if isinstance(v, Merged):
                refuse(_label("", type(module).__name__), "call",
                       f"the output {v.shape} has its batch axis merged with other rows")
            elif v.layout == "flat":
                refuse(_label("", type(module).__name__), "call",
                       "the output is a channels-first flatten (only a Linear may read it)")
            elif isinstance(v.layout, tuple):
                refuse(_label("", type(module).__name__), "call",
                       f"the output is held with its axes in another order ({v.layout}; the "
                       f"spec has no Transpose op to put them back)")
    if len(outs) != 1 and not refusals:
        refuse(_label("", type(module).__name__), "call",
               f"{len(outs)} outputs (the spec trains a model with one output)")
    lines = [f"{k}: {'; '.join(dict.fromkeys(v))}" for k, v in refusals.items()]
    differs = _eval_difference(module, ep_train, ep_eval)
    if differs:
        lines.append(differs)
    if lines:
        raise ImportRefused(lines)
    out = out_vals[0]
    if out.tensor is graph_input:
        raise ImportRefused([f"<root> ({type(module).__name__}): the model computes nothing"])
    graph = Model(graph_input, out.tensor, name=_model_name(model_name))
    try:
        check_shapes(graph, b)
    except Unsupported as e:
        raise ImportRefused([f"<root> ({type(module).__name__}): {e}"]) from None
    graph, fused = fuse(graph)   # written-out GELUs to the layer op, Dropout(0) removed
    unused = [k for k, p in module.named_parameters() if k not in b.names]
    if unused:
        raise ImportRefused([f"{k}: a parameter the traced graph never reads (the spec has no "
                             f"unused parameters; remove it or map it)" for k in unused])
    const_buffers = tuple(sorted({to_buffer[p.name] for n in nodes if n.name in folded
                                  for p in n.all_input_nodes if p.name in to_buffer}
                                 | getattr(b, "buffers_read", set())))
    ignored = [k for k in to_buffer.values() if k not in b.names and k not in const_buffers]
    return Captured(graph, b.params, b.state, b.names, b.layouts, b.node_source,
                    "nchw" if graph_input is not None and len(example_inputs[0].shape) == 4
                    else "plain", ignored, fx_nodes,
                    const_buffers, len(folded), fused)


def _note(fx_nodes, v, fx_name):
    if isinstance(v, Merged):   # held unmerged: (k rows, held order) say how to read it
        if v.at == 0 and v.inner.layout != "flat":
            layer = getattr(getattr(v.inner.tensor, "source", None), "layer", None)
            if layer is not None and layer.name not in fx_nodes:
                fx_nodes[layer.name] = (fx_name, "merged", (v.k, v.inner.perm))
        return
    if not isinstance(v, Value):   # a tuple of pieces (split), a parameter view
        return
    layer = getattr(getattr(v.tensor, "source", None), "layer", None)
    if layer is not None and layer.name not in fx_nodes:
        fx_nodes[layer.name] = (fx_name, v.layout, v.chw)


class _MissingType:
    def __repr__(self):
        return "<refused>"


_Missing = _MissingType()


def _has_folded(xs) -> bool:
    return any(isinstance(x, Folded) for x in flat_args(xs))


def _has_missing(xs) -> bool:
    for x in xs:
        if x is _Missing:
            return True
        if isinstance(x, (list, tuple)) and _has_missing(x):
            return True
    return False


def _model_name(name: str) -> str:
    import re

    name = re.sub(r"[^A-Za-z0-9_]", "_", name) or "model"
    return name if re.match(r"[A-Za-z_]", name) else f"m_{name}"


def _map_group(b, module, path, nodes, env, placeholders, refuse):
    """Call a user's mapping for the calls inside ``module`` (one output)."""
    inside = {n.name for n in nodes}
    inputs, seen = [], set()
    for n in nodes:
        for a in n.all_input_nodes:
            if a.name not in inside and a.name not in placeholders and a.name not in seen:
                seen.add(a.name)
                inputs.append(a.name)
    outputs = [n for n in nodes if any(u.name not in inside for u in n.users)]
    label = _label(path, type(module).__name__)
    if len(outputs) != 1:
        refuse(label, "module", f"a user mapping needs one output; the module has "
                                f"{len(outputs)}")
        return
    vals = [env.get(i, _Missing) for i in inputs]
    if any(v is _Missing for v in vals):
        return
    val = outputs[0].meta.get("val")
    shape = tuple(val.shape) if hasattr(val, "shape") else ()
    try:
        out = _mapping(module)(module, *vals, ModuleBuilder(b, path, label, shape))
    except Unsupported as e:
        refuse(label, "module", str(e))
        return
    if not isinstance(out, Value):
        refuse(label, "module", f"the user mapping returned {type(out).__name__}, not a Value")
        return
    env[outputs[0].name] = out
    return outputs[0].name
