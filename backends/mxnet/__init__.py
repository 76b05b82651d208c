"""The MXNet backend: a spec lowered to Gluon ``HybridBlock``s (hybridized) and the canonical
optimizers on MXNet NDArrays.

    from rosetta.backends.mxnet import Backend
    program = Backend().compile(spec, dtype="float64", device="cpu")
    program.train_step({"x": x}, y)
    program.model      # a hybridized GraphBlock: call it on canonical (channels-last) arrays

MXNet 1.9.1 (its last release) needs NumPy < 1.24, which TensorFlow and JAX refuse: it lives in
an environment of its own (docs/guide/mxnet.md), and its trajectories are
compared with the other backends' through saved files (``rosetta conformance --save`` /
``--compare``). Importing this package imports no framework; its modules import mxnet (and never
torch, TensorFlow or JAX). It has no data-parallel engine (``engine`` None).
"""

from __future__ import annotations

from rosetta import backend as contract


class Backend(contract.Backend):
    name = "mxnet"
    order = 3
    requires = ("mxnet",)
    distributions = ("mxnet",)
    extra = "mxnet"
    own_environment = (
        "MXNet 1.9.1 needs numpy<1.24 (TensorFlow and JAX refuse it), so it lives in its own "
        "environment: python3.11 -m venv .venv-mxnet && .venv-mxnet/bin/pip install -e "
        "'.[mxnet]' (docs/guide/mxnet.md)")
    # hybrid: the blocks hybridized, MXNet's compiled graph; imperative: op by op
    modes = ("hybrid", "imperative")
    shard_params_refusal = ("it has no data-parallel engine in rosetta (one device only), and "
                            "MXNet's kvstore replicates parameters rather than sharding them")
    formats = {
        "mxnet": contract.ExportFormat(("float32", "float64"),
                                       "MXNet HybridBlock.export: symbol JSON + params"),
    }

    def version(self) -> str:
        import mxnet as mx
        import numpy as np

        return f"mxnet {mx.__version__}, numpy {np.__version__}"


__all__ = ["Backend"]
