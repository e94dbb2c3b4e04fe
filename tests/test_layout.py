"""The layout by role holds: imports, at module level or inside a function, run one way (records <- db <- space <-
training <- evaluation <- search <- scaling <- dashboard), no module-level import cycle, and SQL only in db/."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("db", "effnas", "nas", "scaling", "dashboard")
# Lower layers never import higher ones. effnas.records (the records storage maps) sits below db, effnas.cli (the
# shared command-line convention) just above it; the package itself (its public load_member) and effnas.__main__,
# the `effnas` script, above everything.
LAYERS = (
    ("effnas.records", -1), ("db", 0), ("db.__main__", 1), ("effnas.cli", 1), ("effnas", 7), ("effnas.__main__", 7),
    ("nas.space", 2), ("nas.training", 3),
    ("nas.evaluation", 4), ("nas.search", 5), ("nas.export", 5), ("nas", 5), ("scaling", 6), ("dashboard", 7),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    """The rank of the longest prefix that names `module`'s place."""
    matches = [(len(prefix), rank) for prefix, rank in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


def module_level_imports(path: Path) -> set[str]:
    """Imports executed when the module is imported (not those inside functions)."""
    names = set()

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(getattr(node, "body", []))
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(ast.parse(path.read_text()).body)
    return names


def all_imports(path: Path) -> set[str]:
    """Every import in the module, those inside functions too: a deferred import still reaches its layer."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def internal_imports(found: dict[str, Path], read=module_level_imports) -> dict[str, set[str]]:
    return {name: {imported for imported in read(path) if imported in found} for name, path in found.items()}


def test_imports_run_one_way_from_records_up_to_the_dashboard():
    found = modules()
    wrong = [f"{name} imports {imported}" for name, imports in internal_imports(found, all_imports).items()
             for imported in imports if layer(imported) > layer(name)]
    assert not wrong, wrong


def test_the_layout_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "lower.py"
    module.write_text("def late():\n    from scaling.grow import main\n    return main\n")
    assert "scaling.grow" in all_imports(module) and "scaling.grow" not in module_level_imports(module)


def test_no_module_level_import_cycle():
    graph = internal_imports(modules())
    state: dict[str, int] = {}

    def cycle_from(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state:
                found = cycle_from(nxt, trail + [node])
                if found:
                    return found
        state[node] = 2
        return None

    for node in graph:
        if node not in state:
            assert cycle_from(node, []) is None


def test_only_db_speaks_sql():
    # Imports anywhere in a module count; the remote check's probe, a script run on another machine, names
    # SQLAlchemy only as text.
    outside = [name for name, path in modules().items() if not name.startswith("db")
               and any(imported.split(".")[0] == "sqlalchemy" for imported in all_imports(path))]
    assert not outside, outside
