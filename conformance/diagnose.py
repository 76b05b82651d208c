"""Localize a disagreement between two backends: which part of the step goes wrong first.

A trajectory comparison says where the numbers differ most; a planted or real semantic bug is
better named by where they *start* to differ. ``first_divergence`` reads two trajectories in causal
order (step by step: loss, gradients, model state, parameters, optimizer state; then the eval-mode
output after the last step, category ``eval``) and names the first tensor outside the bound. When
that is the loss or a gradient of the first step, ``first_bad_node``
bisects the graph: it lowers the sub-graph ending at each node on both backends and compares that
node's output, returning the first node whose output disagrees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rosetta.backend_registry import get_backend
from rosetta.conformance.compare import Worst, compare_arrays, group_of, group_scales
from rosetta.conformance.tiers import Tier
from rosetta.conformance.trajectory import Trajectory
from rosetta.graph import Graph, Node
from rosetta.losses import MeanSquaredError
from rosetta.optim import SGD
from rosetta.spec import TrainSpec

ORDER = ("loss", "grads", "state", "params", "opt")


@dataclass
class Divergence:
    step: int
    category: str
    tensor: str
    worst: Worst
    node: str | None = None     # for a forward divergence: the first node that disagrees
    op: str | None = None

    def __str__(self):
        where = f"{self.category}/{self.tensor}" if self.tensor else self.category
        if self.node:
            return (f"first diverging node: {self.node} ({self.op}), seen at step {self.step} "
                    f"in {where} ({self.worst})")
        return f"first divergence at step {self.step}: {where} ({self.worst})"


def first_divergence(a: Trajectory, b: Trajectory, tier: Tier) -> Divergence | None:
    steps = min(a.meta["steps"], b.meta["steps"])
    for t in range(steps):
        for cat in ORDER:
            if cat == "loss":
                w = compare_arrays(a.loss[t], b.loss[t], f"loss @ step {t}", tier.tolerance,
                                   tier.floor_fraction)
                if not w.passed:
                    return Divergence(t, "loss", "", w)
                continue
            ta, tb = getattr(a, cat), getattr(b, cat)
            i = t + 1 if cat in ("params", "state") else t
            worst = None
            scales = group_scales({k: v[i] for k, v in tb.items()})
            for k in ta:
                if k not in tb:
                    continue
                w = compare_arrays(ta[k][i], tb[k][i], f"{cat}/{k} @ step {t}", tier.tolerance,
                                   tier.floor_fraction, scales.get(group_of(k), 0.0))
                if not w.passed and (worst is None or w.rel_err > worst[1].rel_err):
                    worst = (k, w)
            if worst:
                return Divergence(t, cat, worst[0], worst[1])
    for k in a.eval:
        if k in b.eval:
            w = compare_arrays(a.eval[k], b.eval[k], f"eval/{k} after step {steps - 1}",
                               tier.tolerance, tier.floor_fraction)
            if not w.passed:
                return Divergence(steps - 1, "eval", k, w)
    return None


def subgraph(graph: Graph, target: str) -> Graph:
    """The graph cut at node ``target``: the nodes it depends on, with ``target`` as output."""
    keep = graph.ancestors([target])
    nodes = [Node(n.name, n.op, dict(n.attrs), tuple(n.inputs)) for n in graph.nodes
             if n.name in keep]
    used = {s for n in nodes for s in n.inputs}
    inputs = [i for i in graph.inputs if i.name in used]
    return Graph(inputs, nodes, [target], name=graph.name)


def first_bad_node(spec: TrainSpec, backend_a: str, backend_b: str, inputs: dict, tier: Tier,
                   *, dtype: str = "float64", training: bool = True, masks: dict | None = None):
    """(node name, op, Worst) of the first node, in graph order, whose training-mode output
    differs between the backends beyond the tier's bound; None if every node agrees."""
    params = spec.model.init_params(spec.seed)
    for node in spec.model.nodes:
        sub = subgraph(spec.model, node.name)
        sub_spec = TrainSpec(sub, MeanSquaredError(), SGD(0.1), spec.data, steps=1,
                             seed=spec.seed)
        sub_params = {k: v for k, v in params.items() if k in sub.param_defs()}
        sub_inputs = {k: v for k, v in inputs.items() if k in {i.name for i in sub.inputs}}
        sub_masks = {k: v for k, v in (masks or {}).items() if k in {n.name for n in sub.nodes}}
        outs = []
        for be in (backend_a, backend_b):
            prog = get_backend(be).compile(sub_spec, dtype=dtype, device="cpu")
            prog.load(sub_params, sub.init_state())
            outs.append(prog.forward(sub_inputs, training=training, masks=sub_masks or None))
        w = compare_arrays(np.asarray(outs[0], np.float64), np.asarray(outs[1], np.float64),
                           f"output of {node.name}", tier.tolerance, tier.floor_fraction)
        if not w.passed:
            return node.name, node.op, w
    return None


def diagnose(spec: TrainSpec, a: Trajectory, b: Trajectory, tier: Tier, first_inputs: dict,
             first_masks: dict | None = None) -> Divergence | None:
    """The first divergence, with the first diverging node when it is a step-0 forward issue."""
    d = first_divergence(a, b, tier)
    if d is not None:
        name_node(d, spec, a.meta["backend"], b.meta["backend"], first_inputs, tier,
                  a.meta["dtype"], first_masks)
    return d


def name_node(d: Divergence, spec, backend_a, backend_b, first_inputs, tier, dtype,
              first_masks=None) -> None:
    """Bisect the graph for a forward divergence: the loss or a gradient of step 0 (training
    mode, the step's masks), or the eval-mode output (eval mode, from the initial parameters
    and state: an eval-mode rule that differs shows there already)."""
    if d.step == 0 and d.category in ("loss", "grads"):
        found = first_bad_node(spec, backend_a, backend_b, first_inputs, tier, dtype=dtype,
                               masks=first_masks)
    elif d.category == "eval":
        found = first_bad_node(spec, backend_a, backend_b, first_inputs, tier, dtype=dtype,
                               training=False)
    else:
        return
    if found:
        d.node, d.op, _ = found
