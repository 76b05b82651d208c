"""``import rosetta`` and everything in the core imports no framework; a backend imports only its
own framework."""

from __future__ import annotations

from helpers import imported_after as _imported_after



def test_core_imports_no_framework():
    code = ("import rosetta, rosetta.models, rosetta.cli, rosetta.training, rosetta.conformance\n"
            "from rosetta import models\n"
            "spec = models.get('cnn'); p = spec.model.init_params(0)\n"
            "import numpy as np\n"
            "spec.model.reference_forward(p, np.zeros((2, 8, 8, 1)))\n"
            "spec.data.load()\n"
            "rosetta.available_backends()\n")
    assert _imported_after(code) == set()


def test_cli_listing_imports_no_framework():
    code = "from rosetta.cli import main\nmain(['models'])\n"
    assert _imported_after(code) == set()
