"""pytest plugin (entry point ``pytest11``): test your own specs for cross-backend conformance.

    from rosetta.conformance.pytest_plugin import assert_conformant

    def test_my_model_agrees():
        assert_conformant(my_spec, backends=("torch", "jax"), dtype="float64", steps=5)

or mark a test whose function returns a spec: ``@pytest.mark.rosetta_conformance(steps=5)``.
On failure the message is the worst-element report of each failing pair.

Your own hand-written model (``rosetta.conformance.native``) against the spec on the backends:

    assert_conformant(my_spec, native=my_factory, backends=("torch", "jax"))

``my_factory(dtype)`` returns a ``TorchNative``, ``TensorFlowNative``, ``KerasNative`` or
``FlaxNative``; it may also be given as ``"module:function"``. On failure the message names the
tensor to blame.
"""

from __future__ import annotations

try:   # ``assert_conformant`` works without pytest; the hooks below are pytest's only
    import pytest
    _hookimpl = pytest.hookimpl
except ImportError:  # pragma: no cover  (tested in a process where pytest cannot be imported)
    def _hookimpl(**options):
        return lambda f: f


class ConformanceError(AssertionError):
    pass


def assert_conformant(spec, backends=None, dtype: str = "float64", steps: int = 5,
                      device: str = "cpu", dropout: str = "inject", seed: int | None = None,
                      native=None):
    """Train ``spec`` on each backend from the same start and batches; fail with the worst
    element of every pair outside its tier's bound. Returns the results.

    ``native`` (a factory ``f(dtype) -> NativeProgram`` or ``"module:function"``): compare your
    own native code with the spec on each backend instead (dropout off, see ``native.py``)."""
    from rosetta.backend_registry import available_backends

    backends = list(backends or available_backends())
    if native is not None:
        from rosetta.conformance.native_suite import run_native
        if not backends:
            raise ConformanceError("comparing native code needs one backend installed")
        results, _ = run_native(spec, native, backends, dtype=dtype, device=device, steps=steps,
                                seed=seed)
        _fail_on(results, "your native code and the spec disagree")
        return results
    from rosetta.conformance.suite import run
    if len(backends) < 2:
        raise ConformanceError(f"conformance compares two or more backends; installed: "
                               f"{backends}")
    results, _ = run(spec, backends, dtype=dtype, device=device, steps=steps, seed=seed,
                     dropout=dropout)
    _fail_on(results, "backends disagree")
    return results


def _fail_on(results, title):
    failed = [r for r in results if not r.passed]
    if failed:
        lines = [f"{r.model}: {r.backend_a} vs {r.backend_b} ({r.tier} tier, bound "
                 f"{r.tolerance:.0e}): {r.where} {r.note}".rstrip() for r in failed]
        raise ConformanceError(f"{title}:\n" + "\n".join(lines))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "rosetta_conformance(backends=None, dtype='float64', steps=5): the test "
        "returns a rosetta TrainSpec, which must train to the same numbers on every backend")


@_hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    marker = pyfuncitem.get_closest_marker("rosetta_conformance")
    if marker is None:
        return None
    funcargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    spec = pyfuncitem.obj(**funcargs)
    from rosetta.spec import TrainSpec
    if not isinstance(spec, TrainSpec):
        raise ConformanceError("a test marked rosetta_conformance must return a TrainSpec")
    assert_conformant(spec, **marker.kwargs)
    return True
