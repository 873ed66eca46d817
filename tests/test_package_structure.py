"""The public API follows scanpy's conventions (signatures, documentation) and stays light to import."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing

import pytest

import musegnn_sc as msg

NAMESPACES = ("pp", "tl", "pl", "datasets", "io")


def _public_functions():
    for ns in NAMESPACES:
        mod = getattr(msg, ns)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                yield pytest.param(obj, id=f"{ns}.{name}")


FUNCS = list(_public_functions())


def test_namespaces_export_something():
    assert msg.pp.__all__, "msg.pp exports nothing"
    assert msg.datasets.__all__, "msg.datasets exports nothing"


@pytest.mark.parametrize("func", FUNCS)
def test_sig_conventions(func):
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{func.__name__}: options after the data must be keyword-only"
    hints = typing.get_type_hints(func)
    if "copy" in sig.parameters:
        copy = sig.parameters["copy"]
        assert copy.kind is copy.KEYWORD_ONLY
        assert copy.default is False
        first = params[0]
        assert first.name in ("adata", "mdata", "gdata")
        data_type = hints[first.name]
        assert hints["return"] == (data_type | None), f"{func.__name__} must return `{data_type} | None`"
    for p in params:
        assert p.name in hints, f"{func.__name__}: parameter {p.name!r} has no type annotation"


def _documented_parameters(doc: str) -> set[str]:
    """Names in the numpydoc Parameters section: lines flush left, e.g. ``adata``, ``a, b`` or ``**kwargs``."""
    section = doc.split("Parameters\n----------\n", 1)[1].split("\nReturns\n-------", 1)[0]
    names = set()
    for line in section.splitlines():
        if line and not line.startswith(" "):
            names.update(n.strip().lstrip("*") for n in line.split(":")[0].split(","))
    return names


@pytest.mark.parametrize("func", FUNCS)
def test_every_parameter_documented(func):
    doc = inspect.getdoc(func)
    assert doc, f"{func.__name__} has no docstring"
    assert "Parameters\n----------" in doc
    assert "Returns\n-------" in doc
    documented = _documented_parameters(doc)
    for name in inspect.signature(func).parameters:
        assert name in documented, f"{func.__name__}: parameter {name!r} is not documented"


def test_import_is_light():
    """`import musegnn_sc` must not pull torch, PyG, squidpy or scvi-tools (seconds of import time)."""
    code = (
        "import sys, musegnn_sc, musegnn_sc.pp, musegnn_sc.tl, musegnn_sc.pl, musegnn_sc.datasets;"
        "heavy = [m for m in ('torch', 'torch_geometric', 'squidpy', 'scvi', 'lightning') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported at import time: {out.stdout.strip()}"
