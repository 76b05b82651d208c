"""TensorFlow's data-parallel engine, the launcher's side (imports no framework): a
``TF_CONFIG`` names the workers on several hosts; on one machine one process drives N logical
devices. The engine itself (``tf.distribute``) is ``data_parallel``."""

from __future__ import annotations

import json

from rosetta import distributed
from rosetta.errors import BackendUnavailable, DataError


def parse_tf_config(text: str) -> dict:
    """``TF_CONFIG`` (JSON: ``cluster`` {"worker": [host:port, ...]}, ``task`` {type, index}) as
    {"workers": [...], "index": i}; ``DataError`` naming what is wrong."""
    try:
        cfg = json.loads(text)
        workers = list(cfg["cluster"]["worker"])
        task = cfg["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"TF_CONFIG must be JSON with cluster.worker (a list of host:port) and "
                        f"task.type / task.index ({type(e).__name__}: {e})") from None
    if task.get("type") not in ("worker", "chief") or not 0 <= index < len(workers):
        raise DataError(f"TF_CONFIG task {task!r} is not one of the {len(workers)} workers")
    return {"workers": workers, "index": index}


class Engine(distributed.Engine):
    """``MirroredStrategy`` over the devices of one process, ``MultiWorkerMirroredStrategy``
    over the hosts a ``TF_CONFIG`` lists."""

    launch_env = ("TF_CONFIG",)
    module = "rosetta.backends.tensorflow.data_parallel"
    precisions = ("float32", "float64")
    precision_refusal = ("its tf.distribute step has no dynamic loss scale and is not checked "
                         "by the precision tier")

    def launched(self, env) -> bool:
        return "TF_CONFIG" in env

    def world(self, env) -> tuple[int, int]:
        if not self.launched(env):
            return 0, 1
        cfg = parse_tf_config(env["TF_CONFIG"])
        return cfg["index"], len(cfg["workers"])

    def host_command(self, module, *, hosts, per_host, rank, endpoints, python="python",
                     max_restarts=0, one_machine=False):
        """One process per host with a ``TF_CONFIG`` listing every worker (``endpoints``) and
        naming its own index; MultiWorkerMirroredStrategy gives a CPU worker one device."""
        if per_host != 1:
            raise BackendUnavailable(f"tensorflow's MultiWorkerMirroredStrategy drives one "
                                     f"device per CPU worker, {per_host} asked: run "
                                     f"{hosts * per_host} workers of 1 device")
        if max_restarts:
            raise BackendUnavailable("tensorflow has no launcher that restarts a lost worker: "
                                     "restart the workers' commands with --resume RUN_FOLDER")
        workers = list(endpoints[:hosts])
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}
        return [python, "-m", *module], {"TF_CONFIG": json.dumps(config)}
