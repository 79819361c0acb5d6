"""The layout shows the architecture: a module imports only from its own layer or those to its left."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lwroi"
LAYERS = ["exceptions", "_io", "config", "data", "features", "encoding", "orchestration", "outputs", "cli"]
HEAVY = {"torch": {"features", "encoding"}, "mpi4py": {"orchestration"}}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_leftward_layers(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    own = layer_of(".".join(rel.parts))
    if own not in LAYERS:
        return  # lwroi/__init__.py
    for module in imports(path):
        root = module.split(".")[0]
        if root == "lwroi" and layer_of(module) in LAYERS:
            assert LAYERS.index(layer_of(module)) <= LAYERS.index(own), f"{rel} imports {module}"
        if root in HEAVY:
            assert own in HEAVY[root], f"{rel} imports {root}, allowed only in {sorted(HEAVY[root])}"


def test_data_layer_imports_without_torch_or_mpi():
    import subprocess
    import sys

    code = "import sys, lwroi.data, lwroi.config; print(sorted({'torch', 'mpi4py'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_a_rank_that_only_fits_imports_neither_torchvision_nor_pyav():
    """``lwroi.features`` loads its modules on first use: reading a store costs no network import (~2 s)."""
    import subprocess
    import sys

    code = ("import sys, lwroi.features, lwroi.encoding, lwroi.orchestration.tasks; "
            "from lwroi.features import feature_paths, open_feature_store; "
            "print(sorted({'torchvision', 'av'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_the_lazy_features_package_exports_exactly_what_it_can_load():
    import lwroi.features as features

    assert sorted(features.__all__) == sorted(features._WHERE)
    assert all(getattr(features, name) is not None for name in features.__all__)


ENVIRONMENT_READERS = {"orchestration/environment.py", "cli.py"}
"""The launch environment is read in one module; the CLI hands ``os.environ`` to the site file's reader."""


def test_only_the_environment_module_reads_environment_variables():
    readers = set()
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                readers.add(str(path.relative_to(PACKAGE)))
            elif isinstance(node, ast.ImportFrom) and node.module == "os":
                if {a.name for a in node.names} & {"environ", "getenv", "environb"}:
                    readers.add(str(path.relative_to(PACKAGE)))
    assert readers <= ENVIRONMENT_READERS, f"read the environment in orchestration/environment.py: {readers}"
