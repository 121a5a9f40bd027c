import importlib
import subprocess
import sys

import circuits


def test_every_public_name_resolves():
    for name in circuits.__all__:
        assert getattr(circuits, name) is not None, name
    assert callable(circuits.train) and callable(circuits.HookedTransformer)
    assert importlib.import_module("circuits.plots") is circuits.plots


def test_import_is_lazy():
    code = "import sys, circuits; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
