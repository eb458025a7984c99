"""Imports in the xrlhf package point down its layers, and no modules import each other round a cycle.

Read from the source with ast (nothing is imported); imports inside functions count as well as those at the top.
A module named by a string and loaded with importlib (the LEARNERS registry's "module:Class") is not seen.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Bottom first. A module may import modules of its own layer and of those below. A name covers the package (or
# module) it names and everything under it; the longest name that matches a module gives its layer, so "driver.step"
# places that one module of the driver below the actors, which return its typed results. Derived from the code: the
# judge scores with a local model (policy), so it sits over it.
LAYERS = [
    ("config", "data", "stats", "logs", "ops", "exposure", "prompts"),  # leaves: import nothing of xrlhf
    ("algorithms",),  # losses, advantages and KL estimators over ops
    ("policy",),  # the models, sampling and the batch
    ("judge", "learners"),  # the reward and the update; neither imports the other
    ("driver.step",),  # one step over any roles, and the typed results the actors return
    ("actors",),
    ("driver",),  # the loop, the Ray graph, what a step writes and where
    ("report",),  # the report from a compare directory's files
    ("evaluate", "compare", "cli"),  # the commands
]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted module name: file} of every module of the xrlhf package under root."""
    out = {}
    for path in sorted((root / "xrlhf").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(module imported, line) for each xrlhf import in the file, at any depth; `from P import x` is the submodule
    P.x when there is one, else P."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target not in known and "." in target:
                    target = target.rsplit(".", 1)[0]
                out.append((target, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in known else base, node.lineno))
    return [(t, line) for t, line in out if t.split(".")[0] == "xrlhf" and t != name]


def layer(name: str) -> int | None:
    """The index in LAYERS of a module's layer (its longest matching name); the package's own __init__ is a leaf;
    None: in no layer."""
    parts = name.split(".")
    if len(parts) == 1:
        return 0
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[1:n + 1])
        found = next((i for i, names in enumerate(LAYERS) if prefix in names), None)
        if found is not None:
            return found
    return None


def graph(root: Path = ROOT) -> dict[str, list[tuple[str, int]]]:
    found = modules(root)
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def upward(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    """Each import of a module in a higher layer than the importer's, as 'a:line imports b (layer i > j)' (a module
    in no layer is test_every_module_has_a_layer's failure)."""
    return [f"{a}:{line} imports {b} (layer {layer(b)} > {layer(a)})"
            for a, targets in edges.items() for b, line in targets
            if None not in (layer(a), layer(b)) and layer(b) > layer(a)]


def cycles(edges: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The groups of modules that import each other round a cycle (strongly connected, more than one)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        for w, _ in edges.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer(m) is None] == []


def test_no_import_runs_upward():
    assert upward(graph()) == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_every_import_names_a_module_of_the_package():
    """A path a module has left (before driver/, policy/, report/) fails here, also in an import inside a function
    that no test runs."""
    known = set(modules())
    assert [f"{a}:{line} imports {b}" for a, targets in graph().items() for b, line in targets if b not in known] == []


def test_the_walk_sees_top_level_lazy_and_from_package_imports():
    edges = {a: {b for b, _ in targets} for a, targets in graph().items()}
    assert {"xrlhf.algorithms.ppo", "xrlhf.ops", "xrlhf.learners.common"} <= edges["xrlhf.learners.ppo"]
    assert "xrlhf.actors.learner" in edges["xrlhf.driver.graph"]  # inside build_graph
    assert "xrlhf.judge.guards" in edges["xrlhf.judge.base"]  # from xrlhf.judge import guards: the submodule
    assert "xrlhf.judge" in edges["xrlhf.evaluate"]  # from xrlhf.judge import build_judge: the package


def test_an_upward_import_and_a_cycle_are_caught(tmp_path):
    for package in ("xrlhf", "xrlhf/driver", "xrlhf/actors"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "xrlhf" / "config.py").write_text("def f():\n    from xrlhf.driver import controller\n")
    (tmp_path / "xrlhf" / "driver" / "controller.py").write_text("from xrlhf.config import f\n")
    (tmp_path / "xrlhf" / "driver" / "step.py").write_text("")
    (tmp_path / "xrlhf" / "actors" / "learner.py").write_text(
        "from xrlhf.driver import step\nimport xrlhf.driver.controller\n")
    edges = graph(tmp_path)
    assert upward(edges) == ["xrlhf.actors.learner:2 imports xrlhf.driver.controller (layer 6 > 5)",
                             "xrlhf.config:2 imports xrlhf.driver.controller (layer 6 > 0)"]
    assert cycles(edges) == [["xrlhf.config", "xrlhf.driver.controller"]]
    assert (layer("xrlhf.driver.step"), layer("xrlhf.actors.learner"), layer("xrlhf.driver")) == (4, 5, 6)
