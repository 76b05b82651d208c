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
from rosetta.importers.patterns import fuse, same_values
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


def _multihead_attention(module, *args, group=None):
    """torch's ``nn.MultiheadAttention`` (built-in mapping), written out as its math on the
    batch-first (N, T, E) query and (N, S, E) key and value (with ``batch_first=False`` the source
    tensors are (T, N, E): they must be held batch first, as a model that transposes its (N, T, E)
    input holds them, and the output is held so too, standing for the source's (T, N, E)):

        q = query W_q^T + b_q,  k = key W_k^T + b_k,  v = value W_v^T + b_v,  each -> (h, ., d)
        w = softmax(q k^T / sqrt(d) + M) over the S keys  (Dropout(p) on w where ``dropout`` > 0)
        y = concat_h(w v) W_out^T + b_out                  (Dense: out_proj)

    Projections, every source parameter one canonical parameter:

    * self-attention (query, key and value one tensor): ``in_proj_weight`` (3E, E) is the kernel
      of one Dense of 3E units (bias ``in_proj_bias``), sliced into q, k and v;
    * query, key and value that differ (cross-attention, ``mha(x, memory, memory)``): the packed
      ``in_proj_weight`` is one ``Parameter`` (held as its transpose, (E, 3E)) whose column
      blocks [0, E), [E, 2E), [2E, 3E) are sliced and read by a MatMul each (W_q^T, W_k^T,
      W_v^T), the bias one ``Parameter`` sliced likewise and added: its gradient sums the three
      reads, as torch's does on the one packed tensor;
    * ``kdim``/``vdim`` (``q_proj_weight``, ``k_proj_weight``, ``v_proj_weight``): a Dense without
      bias each, the packed ``in_proj_bias`` a ``Parameter`` sliced three ways and added.

    M, the mask torch's own attention call receives (read from the traced graph): none; causal
    (``is_causal=True`` without a key-padding mask and without ``need_weights``, torch then drops
    the mask and computes causal attention: -inf where key j > query i, ``Where``); or a
    constant (``attn_mask`` a folded (T, S) or (N*h, T, S) tensor or buffer: a boolean one is
    -inf where True, a float one added, torch's canonical mask): its -inf entries a ``Where``,
    its finite entries an ``Add`` of a Constant. Refused in one line: a mask computed from the
    model input or that differs per example (a ``key_padding_mask``: the importer takes one
    model input), an input held with another batch axis than ``batch_first`` says, an unbatched
    call, ``add_bias_kv``, ``add_zero_attn``, and reading the returned attention weights."""
    *_, b = args   # (the inputs are read from the traced calls: group)
    bad = []
    if module.bias_k is not None or module.add_zero_attn:
        bad.append("add_bias_kv / add_zero_attn (learned or zero key/value rows appended)")
    if group is None:
        bad.append("called outside torch_graph (no traced graph to read its arguments from)")
    if bad:
        raise Unsupported(f"nn.MultiheadAttention: {'; '.join(bad)}")
    roles, core = _mha_call(module, group)
    vals = {r: group.values.get(roles[r], _Missing) for r in "qkv"}
    if any(v is _Missing for v in vals.values()):
        return None    # an input was refused already: its own line names it
    e, h = module.embed_dim, module.num_heads
    d = e // h
    bf = bool(module.batch_first)
    held = (0, 1, 2) if bf else (1, 0, 2)
    for r, x in vals.items():
        if isinstance(x, Merged) or not isinstance(x, Value) or len(x.shape) != 3 \
                or x.layout == "flat" or x.perm != held:
            fix = ("transpose the (N, T, E) input to (T, N, E) in forward" if not bf
                   else "use batch_first=False")
            shape = getattr(x, "shape", None)
            raise Unsupported(f"nn.MultiheadAttention(batch_first={bf}): its "
                              f"{dict(q='query', k='key', v='value')[r]} of shape {shape} is "
                              f"not held with its batch on axis {0 if bf else 1} (an unbatched "
                              f"call, or a batch on the other axis: {fix})")
    bb = b._b

    def layer(op, ins, name, full, **kw):   # a layer on held, batch-first tensors
        return bb.layer(op, ins, name=b._full(name), source=b.label, layout="plain",
                        out_shape=full, **kw)

    n = vals["q"].shape[held[0]]
    t, s = vals["q"].shape[held[1]], vals["k"].shape[held[1]]
    bias = module.in_proj_bias is not None
    proj = {}
    if roles["q"] == roles["k"] == roles["v"] and module._qkv_same_embed_dim:
        qkv = layer("Dense", [vals["q"]], "in_proj", (n, t, 3 * e), units=3 * e,
                    use_bias=bias, params={"kernel": (b._full("in_proj_weight"), "linear"),
                                           **({"bias": (b._full("in_proj_bias"), "identity")}
                                              if bias else {})})
        for i, r in enumerate("qkv"):
            proj[r] = layer("Slice", [qkv], r, (n, t, e), axes=(-1,), starts=(i * e,),
                            stops=((i + 1) * e,), steps=(1,))
    else:
        packed = None
        if module._qkv_same_embed_dim:
            packed = layer("Parameter", [], "in_proj", (1, e, 3 * e), shape=(e, 3 * e),
                           init="ones", params={"value": (b._full("in_proj_weight"),
                                                          "linear")})
        b_all = layer("Parameter", [], "in_proj_bias", (1, 3 * e), shape=(3 * e,), init="zeros",
                      params={"value": (b._full("in_proj_bias"), "identity")}) if bias else None
        for i, r in enumerate("qkv"):
            x, length = vals[r], (t if r == "q" else s)
            if packed is not None:
                w = layer("Slice", [packed], f"{r}_weight", (1, e, e), axes=(-1,),
                          starts=(i * e,), stops=((i + 1) * e,), steps=(1,))
                y = layer("MatMul", [x, w], f"{r}_proj", (n, length, e))
            else:
                y = layer("Dense", [x], f"{r}_proj", (n, length, e), units=e, use_bias=False,
                          params={"kernel": (b._full(f"{r}_proj_weight"), "linear")})
            if b_all is not None:
                bi = layer("Slice", [b_all], f"{r}_bias", (1, e), axes=(-1,), starts=(i * e,),
                           stops=((i + 1) * e,), steps=(1,))
                y = layer("Add", [y, bi], f"{r}_biased", (n, length, e))
            proj[r] = y
    heads = {}
    for r in "qkv":
        length = t if r == "q" else s
        y = layer("Reshape", [proj[r]], f"{r}_heads", (n, length, h, d), shape=(length, h, d))
        heads[r] = layer("Transpose", [y], f"{r}_by_head",
                         (n, h, d, length) if r == "k" else (n, h, length, d),
                         perm=(1, 2, 0) if r == "k" else (1, 0, 2))
    sc = (n, h, t, s)
    w = layer("MatMul", [heads["q"], heads["k"]], "scores", sc)
    w = layer("Multiply", [w], "scale", sc, constant=1.0 / float(d) ** 0.5)
    w = _mha_mask(module, group, core, w, layer, (n, h, t, s))
    w = layer("Softmax", [w], "softmax", sc, axis=-1)
    if module.dropout > 0:
        w = layer("Dropout", [w], "attn_dropout", sc, rate=float(module.dropout))
    o = layer("MatMul", [w, heads["v"]], "attend", (n, h, t, d))
    o = layer("Transpose", [o], "by_position", (n, t, h, d), perm=(1, 0, 2))
    o = layer("Reshape", [o], "concat", (n, t, e), shape=(t, e))
    out_bias = module.out_proj.bias is not None
    y = bb.layer("Dense", [o], name=b._full("out_proj"), source=b.label, layout=held,
                 out_shape=b._shape, units=e, use_bias=out_bias,
                 params={"kernel": (b._full("out_proj.weight"), "linear"),
                         **({"bias": (b._full("out_proj.bias"), "identity")}
                            if out_bias else {})})
    return y


@dataclass
class _Group:
    """What the built-in MultiheadAttention mapping reads of its traced calls: the calls, the
    values of the tensors they read from outside (fx name -> Value), the folded calls and the
    parameter placeholders (fx name -> source name)."""
    nodes: list
    values: dict
    folded: dict
    placeholders: dict
    path: str


def _mha_call(module, group):
    """(roles, core): the outside tensor (fx name) each of query, key and value is, found from
    the in-projection each is read by (``in_proj_weight`` whole, or a piece of its chunk /
    split, or ``q/k/v_proj_weight``), through torch's batch-first transposes; and the call that
    computes the attention (``scaled_dot_product_attention``, or ``baddbmm``/``bmm`` where the
    weights are returned), whose mask argument is torch's canonical mask."""
    inside = {n.name: n for n in group.nodes}
    e = module.embed_dim
    prefix = f"{group.path}." if group.path else ""

    def source(node):
        name = group.placeholders.get(getattr(node, "name", None), "")
        return name[len(prefix):] if name.startswith(prefix) else None

    def rows(w):
        """Which of q, k, v a linear's weight projects to ('qkv', 'q', 'kv', ...), or None."""
        whole = {"in_proj_weight": "qkv", "q_proj_weight": "q", "k_proj_weight": "k",
                 "v_proj_weight": "v"}
        if getattr(w, "op", None) == "placeholder":
            return whole.get(source(w))
        if getattr(w, "name", None) not in inside or "getitem" not in str(w.target):
            return None
        base, i = w.args[0], int(w.args[1])
        if not base.args or source(base.args[0]) != "in_proj_weight":
            return None
        kind = str(base.target)
        if kind == "aten.chunk.default":
            k = int(base.args[1])
            sizes = [3 * e // k] * k
        elif kind == "aten.split_with_sizes.default":
            sizes = [int(z) for z in base.args[1]]
        elif kind == "aten.split.Tensor":
            sizes = [int(base.args[1])] * (3 * e // int(base.args[1]))
        else:
            return None
        start = sum(sizes[:i])
        stop = start + sizes[i]
        return "qkv"[start // e:stop // e] if start % e == 0 and stop % e == 0 else None

    def origin(x):
        while getattr(x, "name", None) in inside and str(x.target) == "aten.transpose.int":
            x = x.args[0]
        return x.name if x.name not in inside else None

    roles, core = {}, None
    for n in group.nodes:
        target = str(n.target)
        if target == "aten.linear.default":
            part = rows(n.args[1])
            for r in part or ():
                roles.setdefault(r, set()).add(origin(n.args[0]))
        elif target in ("aten.scaled_dot_product_attention.default", "aten.baddbmm.default") \
                or (target == "aten.bmm.default" and core is None):
            core = core if core is not None and str(core.target) != "aten.bmm.default" else n
    if any(len(roles.get(r, ())) != 1 or None in roles[r] for r in "qkv") or core is None:
        raise Unsupported("nn.MultiheadAttention: torch's traced calls are not the ones this "
                          "importer reads (its query, key and value projections and one "
                          "attention call); this torch version's MultiheadAttention is not "
                          "mapped")
    return {r: next(iter(roles[r])) for r in "qkv"}, core


def _mha_mask(module, group, core, s, layer, shape):
    """The scores ``s`` (N, h, T, S) with the mask torch's attention call ``core`` receives
    (see ``_multihead_attention``)."""
    n, h, t, k = shape
    target = str(core.target)
    if target == "aten.scaled_dot_product_attention.default":
        def arg(i, name, default):
            return core.args[i] if len(core.args) > i else core.kwargs.get(name, default)
        mask, causal = arg(3, "attn_mask", None), bool(arg(5, "is_causal", False))
        if core.kwargs.get("scale") is not None:
            raise Unsupported("nn.MultiheadAttention: an attention call with its own scale")
    elif target == "aten.baddbmm.default":
        mask, causal = core.args[0], False
    else:
        mask, causal = None, False
    if causal:
        tri = np.triu(np.ones((1, t, k), np.int64), 1)
        keep = layer("Constant", [], "causal", (1,) + tri.shape, value=tri)
        s = layer("Where", [keep, s], "causal_mask", shape, x=float("-inf"))
    if mask is None:
        return s
    f = group.folded.get(mask.name)
    if not isinstance(f, Folded):
        raise Unsupported("nn.MultiheadAttention: an attn_mask or key_padding_mask computed "
                          "from the model input (only a constant mask maps: the importer "
                          "takes one model input)")
    arr = f.array
    if arr.ndim == 3 and arr.shape[0] == n * h:
        arr = arr.reshape(n, h, t, k)
    elif arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[3] != k or arr.shape[2] not in (1, t) \
            or arr.shape[1] not in (1, h) or arr.shape[0] not in (1, n):
        raise Unsupported(f"nn.MultiheadAttention: a mask of shape {tuple(f.tensor.shape)} "
                          f"for {h} heads, {t} queries and {k} keys")
    if not (arr == arr[:1]).all():
        raise Unsupported("nn.MultiheadAttention: a mask that differs per example (a "
                          "key_padding_mask, or a 3-D attn_mask: the spec's constants are one "
                          "array shared by every example, and the importer takes one model "
                          "input)")
    m = arr[0]
    if m.dtype == np.bool_:       # the attention call's own boolean rule: True takes part
        m = np.where(m, 0.0, -np.inf)
    masked = np.isneginf(m)
    finite = np.where(masked, 0.0, m)
    if not np.isfinite(finite).all():
        raise Unsupported("nn.MultiheadAttention: a float mask with +inf or nan entries")
    if finite.any():
        c = layer("Constant", [], "mask_add", (1,) + finite.shape, value=finite)
        s = layer("Add", [s, c], "masked_scores", shape)
    if masked.any():
        c = layer("Constant", [], "mask", (1,) + masked.shape, value=masked.astype(np.int64))
        s = layer("Where", [c, s], "mask_fill", shape, x=float("-inf"))
    return s


def _mapping(module):
    """The mapping of a module's calls as one group: a user's (``maps``), or a built-in one
    (stochastic depth, whose random mask no ATen call maps; nn.MultiheadAttention, whose
    packed projection and masks it reads from the traced calls), or None."""
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
        import traceback

        if "_detect_is_causal_mask" in "".join(traceback.format_tb(e.__traceback__)):
            # nn.TransformerEncoder / TransformerDecoder's check of the mask
            msg = ("nn.TransformerEncoder/Decoder compares the mask with a causal one "
                   "(torch.equal, data-dependent: torch.export cannot trace it); pass "
                   "is_causal / tgt_is_causal=True or False with the mask. " + msg)[:600]
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
                                refuse, folded)
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
    fused_graph, fused = fuse(graph)   # written-out GELUs and attention to the layer op,
    if fused:                          # Dropout(0) removed; blame reads only unchanged values
        kept = same_values(graph, fused_graph)
        fx_nodes = {k: v for k, v in fx_nodes.items() if k in kept}
    graph = fused_graph
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


def _map_group(b, module, path, nodes, env, placeholders, refuse, folded):
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
    fn = _mapping(module)
    if len(outputs) != 1:
        refuse(label, "module", "nn.MultiheadAttention: its returned attention weights are "
               "read (the mapping computes the attention output only; call it with "
               "need_weights=False or read only its first output)"
               if fn is _multihead_attention else
               f"a user mapping needs one output; the module has {len(outputs)}")
        return
    vals = [env.get(i, _Missing) for i in inputs]
    builtin = fn is _multihead_attention
    if any(v is _Missing for v in vals) and not builtin:   # (the built-in reads the inputs
        return                                           # it needs and skips a missing one)
    val = outputs[0].meta.get("val")
    shape = tuple(val.shape) if hasattr(val, "shape") else ()
    try:
        mb = ModuleBuilder(b, path, label, shape)
        if builtin:
            out = fn(module, *vals, mb, group=_Group(nodes, dict(zip(inputs, vals)), folded,
                                                     placeholders, path))
        else:
            out = fn(module, *vals, mb)
    except Unsupported as e:
        refuse(label, "module", str(e))
        return
    if out is None and builtin:
        return
    if not isinstance(out, Value):
        refuse(label, "module", f"the user mapping returned {type(out).__name__}, not a Value")
        return
    env[outputs[0].name] = out
    return outputs[0].name
