"""Planted data-parallel traps (the parallel tier's self-test; never used outside tests).

Each is a real mistake of data-parallel code, planted in a worker process before its program is
built, that the parallel tier must catch and blame on the right tensor:

* ``summed_gradients``: the replicas' gradients summed, not averaged (torch: a DDP comm hook that
  all-reduces without dividing; TensorFlow: the per-replica loss not scaled by 1/N before
  tf.distribute sums; JAX: gradients multiplied by the device count, as a ``psum`` in place of a
  ``pmean`` gives) — blamed on the gradients of the first step;
* ``replica_batchnorm``: per-replica BatchNorm statistics where the spec says global (torch and
  TensorFlow; a JAX jit over the global batch cannot make it) — blamed on the first BatchNorm;
* ``same_dropout_mask``: every replica uses replica 0's rows of the keep-masks — blamed on the
  first node with dropout.
"""

from __future__ import annotations

import importlib

import numpy as np

TRAPS = ("summed_gradients", "replica_batchnorm", "same_dropout_mask")


def plant(trap: str, backend: str) -> None:
    if trap not in TRAPS:
        raise ValueError(f"unknown trap {trap!r}; one of {TRAPS}")
    mod = importlib.import_module(f"rosetta.backends.{backend}.data_parallel")
    globals()[f"_{trap}_{backend}"](mod)


def _wrap_init(mod, after):
    init = mod.Program.__init__

    def patched(self, *args, **kwargs):
        init(self, *args, **kwargs)
        after(self)
    mod.Program.__init__ = patched


def _summed_gradients_torch(mod):
    import torch.distributed as dist

    def summed(state, bucket):
        fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])
    _wrap_init(mod, lambda prog: prog.ddp.register_comm_hook(None, summed))


def _summed_gradients_tensorflow(mod):
    mod.Program.replica_loss_factor = lambda self, replicas: 1.0


def _summed_gradients_jax(mod):
    import jax

    program = importlib.import_module("rosetta.backends.jax.program")

    class Summed:
        def __getattr__(self, name):
            return getattr(jax, name)

        def value_and_grad(self, fn, **kw):
            vg = jax.value_and_grad(fn, **kw)

            def wrapped(*args):
                value, grads = vg(*args)
                return value, jax.tree.map(lambda g: g * jax.device_count(), grads)
            return wrapped
    program.jax = Summed()


def _replica_statistics(mod):
    compile_ = mod.compile

    def patched(spec, **kwargs):
        kwargs["batchnorm"] = "replica"
        return compile_(spec, **kwargs)
    mod.compile = patched


_replica_batchnorm_torch = _replica_batchnorm_tensorflow = _replica_statistics


def _replica_batchnorm_jax(mod):
    raise ValueError("jax: one jit over the global batch cannot have per-replica BatchNorm "
                     "statistics (the trap cannot be planted)")


def _same_dropout_mask_torch(mod):
    def first_rows(self, masks):
        if not masks:
            return masks
        return {k: np.asarray(m)[: len(m) // self.world] for k, m in masks.items()}
    mod.Program.replica_masks = first_rows


def _same_dropout_mask_tensorflow(mod):
    mod.Program.replica_masks = lambda self, masks, cut, per: {k: m[:per]
                                                               for k, m in masks.items()}


def _same_dropout_mask_jax(mod):
    def first_rows_everywhere(self, masks):
        if not masks:
            return masks
        return {k: np.concatenate([np.asarray(m)[: len(m) // self.devices]] * self.devices)
                for k, m in masks.items()}
    mod.Program.replica_masks = first_rows_everywhere
