"""No import circle inside a package: each module's imports of its siblings (at module level or
inside a function, relative or absolute, or by ``importlib.import_module``) form an acyclic
graph, so every module can be read, imported and tested from the bottom up.

The graph is read from the source with ``ast``, nothing is imported. Imports under
``if TYPE_CHECKING:`` are left out: they are never run, only read by type checkers.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_names(node, package):
    """Dotted module names a node may import (``from a import b`` gives both a and a.b)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            parent = package.rsplit(".", node.level - 1)[0]
            base = f"{parent}.{base}" if base else parent
        return [base] + [f"{base}.{alias.name}" for alias in node.names]
    if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) \
            == "import_module" and node.args and isinstance(node.args[0], ast.Constant):
        name = node.args[0].value
        return [f"{package}{name}" if name.startswith(".") else name]
    return []


def _runtime_nodes(tree):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr",
                                                                          None)) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(path, package):
    """Every dotted name the module at ``path`` (in ``package``) imports at run time."""
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        names.update(_imported_names(node, package))
    return names


def import_graph(folder, package):
    """module -> the sibling modules it imports, for every ``*.py`` of ``folder`` (importable
    as ``package``); ``__init__`` stands for the package itself."""
    modules = {path.stem: path for path in sorted(folder.glob("*.py"))}
    dotted = {(package if stem == "__init__" else f"{package}.{stem}"): stem for stem in modules}
    graph = {}
    for stem, path in modules.items():
        names = imported_modules(path, package)
        graph[stem] = sorted({dotted[n] for n in names if n in dotted} - {stem})
    return graph


def find_cycle(graph):
    """One import circle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in graph:
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_graph_sees_function_level_and_dynamic_imports():
    graph = import_graph(ROOT / "kernels", "redi.kernels")
    assert "torch_impl" in graph["backend"]
    assert "triton_impl" in graph["backend"]  # importlib.import_module(".triton_impl", ...)
    assert "backend" in graph["linear_logprobs"]
    train = import_graph(ROOT / "redi/train", "redi.train")
    assert "config" not in train["model_spec"]  # imported only under TYPE_CHECKING
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


@pytest.mark.parametrize("folder, package", [
    ("kernels", "redi.kernels"),
    ("redi/train", "redi.train"),
])
def test_no_import_cycle(folder, package):
    cycle = find_cycle(import_graph(ROOT / folder, package))
    assert cycle is None, "import circle: " + " -> ".join(cycle)


# Each layer of the package and the layers above it, which it must never import.
UPPER = ("redi.data", "redi.train", "redi.eval", "redi.demo")
LAYERS = {
    "redi/*.py": UPPER,  # the library: losses, functional, model_dir, files, run_lock, ...
    "redi/grading/*.py": UPPER,
    "redi/integrations/*.py": UPPER,
    "redi/data/*.py": UPPER[1:],
    "redi/train/*.py": UPPER[2:],
}


@pytest.mark.parametrize("pattern", sorted(LAYERS))
def test_layers_point_down(pattern):
    """Data and training use the graders (``redi.grading``) and the model directory records
    (``redi.model_dir``), never the evaluation package; the library layer imports none of
    the application's packages (``redi/cli.py`` dispatches to all of them and is left out)."""
    above = LAYERS[pattern]
    uses = {f"{path.relative_to(ROOT)}: {name}"
            for path in sorted(ROOT.glob(pattern)) if path.name != "cli.py"
            for name in imported_modules(path, ".".join(path.relative_to(ROOT).parts[:-1]))
            if name.startswith(tuple(f"{layer}." for layer in above)) or name in above}
    assert not uses, "imports of an upper layer: " + ", ".join(sorted(uses))
