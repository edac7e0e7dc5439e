"""Imports point one way: types/config/rl <- envs/networks <- rollout/host/models <- evaluation
<- algorithms <- driver <- cli (docs/architecture.md). A module may import its own layer
or lower ones, never a higher one, at module level or inside a function."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "jaxmeta"
LAYERS = [
    {"types", "config", "rl", "papers"},
    {"envs", "networks"},
    {"rollout", "host", "parallel", "models"},
    {"evaluation"},
    {"algorithms"},
    {"driver"},
    {"cli"},
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxmeta"):
            names = [node.module] if node.module != "jaxmeta" else [f"jaxmeta.{a.name}" for a in node.names]
            for n in names:
                yield node.lineno, n
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("jaxmeta."):
                    yield node.lineno, a.name


MODULES = sorted(p for p in ROOT.rglob("*.py") if p.name != "__init__.py" or p.parent != ROOT)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down_the_layers(path):
    own = path.relative_to(ROOT).parts[0].removesuffix(".py")
    assert own in LAYER_OF, f"{own} is in no layer: add it to LAYERS and docs/architecture.md"
    for line, module in _imports(path):
        target = _top(module)
        if target not in LAYER_OF:
            continue
        assert LAYER_OF[target] <= LAYER_OF[own], f"{path.relative_to(ROOT)}:{line} imports {module} (a higher layer)"


def test_the_check_can_fail(tmp_path):
    bad = tmp_path / "rl" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("def f():\n    from jaxmeta.algorithms import maml\n")
    assert [m for _, m in _imports(bad)] == ["jaxmeta.algorithms"]
    assert LAYER_OF["algorithms"] > LAYER_OF["rl"]
