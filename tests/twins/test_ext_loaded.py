"""The twins expose the same surface, and the default build really runs the compiled ones.

yarl's ``test_quoting_c_loaded`` idea: a silent fallback to pure Python would cost
throughput with no error anywhere, so the selectors are checked to have loaded
``gateway._ext.*`` unless ``GATEWAY_PURE_PYTHON=1`` asks for the twins on purpose.
"""

from __future__ import annotations

import importlib

import pytest

from gateway import _impl

STEMS = ["mqtt_codec", "dispatch", "tls_records"]
SELECTORS = {
    "mqtt_codec": "gateway.mqtt.codec",
    "dispatch": "gateway.rules.dispatch",
    "tls_records": "gateway.tls.records",
}
TWIN_CLASS = {"mqtt_codec": "Decoder", "dispatch": "ResourceTable", "tls_records": "Records"}


@pytest.mark.parametrize("stem", STEMS)
def test_twins_declare_the_same_all(stem: str) -> None:
    pure = importlib.import_module(f"gateway._pure.{stem}")
    compiled = importlib.import_module(f"gateway._ext.{stem}")
    assert sorted(compiled.__all__) == sorted(pure.__all__)
    for name in pure.__all__:
        assert hasattr(pure, name), name
        assert hasattr(compiled, name), name


@pytest.mark.parametrize("stem", STEMS)
def test_selector_reexports_the_twin_surface(stem: str) -> None:
    selector = importlib.import_module(SELECTORS[stem])
    twin = _impl.load(stem)
    # the adapter's own functions (gateway/tls/records.py reaches into pyOpenSSL for them)
    own = {"tls_records": {"handles_for", "records_for", "renew_bios"}}.get(stem, set())
    assert sorted(set(selector.__all__) - own) == sorted(twin.__all__)
    for name in twin.__all__:
        assert getattr(selector, name) is getattr(twin, name), name


@pytest.mark.parametrize("stem", STEMS)
def test_selector_loads_the_compiled_module(stem: str) -> None:
    if _impl.PURE_PYTHON:
        pytest.skip("GATEWAY_PURE_PYTHON=1 selects the pure-Python twins on purpose")
    selector = importlib.import_module(SELECTORS[stem])
    assert getattr(selector, TWIN_CLASS[stem]).__module__ == f"gateway._ext.{stem}"
    assert (_impl.load(stem).__file__ or "").endswith((".so", ".pyd"))


def test_shared_values_are_one_object() -> None:
    """Both codec twins return the very same NEED_DATA sentinel and packet classes."""
    from gateway._pure import dispatch as dispatch_py
    from gateway._pure import mqtt_codec as codec_py

    codec_c = importlib.import_module("gateway._ext.mqtt_codec")
    dispatch_c = importlib.import_module("gateway._ext.dispatch")
    assert codec_c.NEED_DATA is codec_py.NEED_DATA
    assert dispatch_c.PointWrite is dispatch_py.PointWrite
    assert dispatch_c.ResourceSpec is dispatch_py.ResourceSpec
