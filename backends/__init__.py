"""Per-framework adapters. Each sub-package has the same module names:

==============  ==============================================================================
``__init__``    ``Backend``: name, versions, devices, ``compile(spec) -> Program``
``device.py``   device names -> framework devices; full float32 precision (TF32 off)
``lowering.py`` ``lowers(op)``: the decorator each lowering registers with, the table and the
                helpers the op families share
``<family>.py`` the lowerings of one op family, as in ``rosetta.ops`` (``dense``,
                ``convolution``, ``pooling``, ``normalization``, ``dropout``, ``shape``,
                ``elementwise``, ``recurrent``, ``attention``)
``layers.py``   imports every family: the complete table ``LOWERINGS``
``model.py``    the native model built from a ``Graph`` (nn.Module / tf.Module / flax Module)
``params.py``   canonical <-> native parameter layout (load and export)
``losses.py``   loss lowering
``optimizers.py`` optimizer and schedule lowering
``program.py``  ``Program``: compiled train step, gradients, forward
==============  ==============================================================================

A diff between two backends should show only real framework differences. ``keras/`` is the
Keras 3 lowering of the ``keras`` export format (not a training backend).
"""
