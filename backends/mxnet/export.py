"""Export for deployment: MXNet's own exporter, ``HybridBlock.export``.

Format ``mxnet`` (``rosetta.export.FORMATS``): the program's hybridized eval block (``model``,
running statistics, no dropout) is run once on the example inputs, which builds its cached graph,
and ``model.export(out / "model")`` writes MXNet's two files, ``model-symbol.json`` (the graph)
and ``model-0000.params`` (the parameters, canonical layout, the export dtype). The standalone
``load_mxnet.py`` reads them back with ``gluon.SymbolBlock.imports`` (MXNet only, no rosetta).
Integer inputs (token ids, lengths) enter the graph in the export's float dtype, as they do in
the program. Only MXNet 1.x's exporter exists for this backend: the other formats are written by
the backend of their framework (``rosetta export --format``).
"""

from __future__ import annotations

from pathlib import Path

from mxnet import nd

from rosetta.errors import BackendUnavailable

FORMATS = ("mxnet",)
PREFIX = "model"


def export(program, fmt: str, out, *, example) -> list[str]:
    if fmt not in FORMATS:
        raise BackendUnavailable(f"the mxnet backend writes format {', '.join(FORMATS)}, not "
                                 f"{fmt!r}")
    if program.mode != "hybrid":
        raise BackendUnavailable("HybridBlock.export needs the hybridized program "
                                 "(mode 'hybrid')")
    xs = [nd.array(example[i.name], dtype=program.dtype, ctx=program.context)
          for i in program.graph.inputs]
    program.model(*xs).wait_to_read()          # builds the cached graph that export writes
    program.model.export(str(Path(out) / PREFIX), epoch=0)
    return [f"{PREFIX}-symbol.json", f"{PREFIX}-0000.params"]
