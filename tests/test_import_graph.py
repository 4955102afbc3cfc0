"""The package's import graph has no cycle between its parts (issue 17.5): every import
statement, at module level or inside a function, read from the source with `ast`."""

import ast
from pathlib import Path

import diffrl_jax

PACKAGE = Path(diffrl_jax.__file__).parent


def part_of(module: str) -> str:
    """diffrl_jax.training.off_policy -> "training"; diffrl_jax.presets -> "presets"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def import_graph() -> dict[str, dict[str, list[str]]]:
    """{part: {imported part: [where, ...]}} over every import of diffrl_jax in the package."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        source = part_of(module)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("diffrl_jax.") and part_of(name) != source:
                    graph.setdefault(source, {}).setdefault(part_of(name), []).append(
                        f"{relative}:{node.lineno}")
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], _ = 1, path.append(node)
        for nxt in graph.get(node, {}):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node], _ = 2, path.pop()
        return None

    for node in list(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": [], "c": []}, "b": {"c": []}}) is None


def test_no_cycle_between_the_packages_parts():
    graph = import_graph()
    cycle = find_cycle(graph)
    where = [f"{a} -> {b}: {graph[a][b][:3]}" for a, b in zip(cycle, cycle[1:])] if cycle else []
    assert cycle is None, "import cycle between parts of diffrl_jax:\n" + "\n".join(where)
    # the mesh's sharding helpers sit below the training loops, not beside them
    assert "training" not in graph.get("parallel", {})
