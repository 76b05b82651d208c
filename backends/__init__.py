"""Per-framework adapters. Each sub-package has the same module names:

==============  ==============================================================================
``__init__``    ``Backend``: name, versions, devices, ``compile(spec) -> Program``
``device.py``   device names -> framework devices; full float32 precision (TF32 off)
``layers.py``   one lowering per registered op (the table ``LOWERINGS``)
``model.py``    the native model built from a ``Graph`` (nn.Module / tf.Module / flax Module)
``params.py``   canonical <-> native parameter layout (load and export)
``losses.py``   loss lowering
``optimizers.py`` optimizer and schedule lowering
``program.py``  ``Program``: compiled train step, gradients, forward
==============  ==============================================================================

A diff between two backends should show only real framework differences.
"""
