"""``rosetta bench``: the same spec timed on every backend and mode, side by side with hand-written
native code and, optionally, Keras 3 (docs/design.md section 7).

The modules, one concern each:

* ``timing``: the measurement rules (its docstring documents every number of the report: the
  paired blocks, the FLOPs rule, the matmul peak and the floor, memory, threads);
* ``plans``: a spec's graph read into a baseline plan (the plain ``arch`` dict of one family,
  loss, optimizer, canonical weights), the bench-only specs (``mlp784``) and the whole-zoo plan
  of a bare ``rosetta bench``;
* ``baselines/``: the hand-written code, one file per framework with the same shape in each
  (``torch_native``, ``tensorflow_native``, ``jax_native``, ``keras_native``): adding a model
  family means adding one builder per framework;
* ``cases``: one spec x backend x mode timed against its baseline (``run_case``) and the float64
  loss check (``compare_losses``);
* ``keras``: the Keras 3 column (``--keras``);
* ``sweep``: cost curves (``--sweep batch=8,32,128``): step time, throughput and memory per point;
* ``report``: the table, JSON, Markdown and the bar chart;
* ``parallel``: ``--devices N``, data-parallel throughput and scaling;
* ``recurrent``: a stand-alone LSTM / GRU timing against the native layers;
* ``command``: the command line.
"""

from rosetta.conformance.bench.timing import (TRAIN_FLOPS_FACTOR, cpu_name, matmul_peak,
                                              peak_memory_mb, train_flops)
from rosetta.conformance.bench.plans import (BASELINES, BENCH_SPECS, baseline_input,
                                             baseline_plan, build_baseline, load_bench_spec,
                                             mlp784, no_baseline_reason, zoo_plan)
from rosetta.conformance.bench.cases import (DEFAULT_BLOCK, DEFAULT_STEPS, _with_batch_size,
                                             bench_batches, compare_losses, loss_bound,
                                             mark_best, run_case, set_peak)
from rosetta.conformance.bench.keras import keras_losses, keras_rules, run_keras
from rosetta.conformance.bench.command import add_parser, run_command

__all__ = ["TRAIN_FLOPS_FACTOR", "cpu_name", "matmul_peak", "peak_memory_mb", "train_flops",
           "BASELINES", "BENCH_SPECS", "baseline_input", "baseline_plan", "build_baseline",
           "load_bench_spec", "mlp784", "no_baseline_reason", "zoo_plan", "DEFAULT_BLOCK",
           "DEFAULT_STEPS", "_with_batch_size", "bench_batches", "compare_losses", "loss_bound",
           "mark_best",
           "run_case", "set_peak", "keras_losses", "keras_rules", "run_keras", "add_parser",
           "run_command"]
