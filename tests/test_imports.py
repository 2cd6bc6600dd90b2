"The package's import graph, read with `ast`: no cycles, no import up the data flow, no library module importing the test fixtures."
import ast, json, re
from pathlib import Path
import pytest
from conftest import ROOT

PKG, NBS = ROOT / "focusclip", ROOT / "nbs"
OUTSIDE_FLOW = {"testing"}  # un-numbered: may import anything, imported by no library module


def notebook_modules() -> dict:
    "module name -> its notebook's number, e.g. {'readers': (1, 'a')} (None for un-numbered notebooks)."
    out = {}
    for nb in sorted(NBS.glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        exp = [m[1] for c in cells if c["cell_type"] == "code" for m in [re.match(r"#\|\s*default_exp\s+(\S+)", "".join(c["source"]))] if m]
        if not exp: continue
        num = re.match(r"(\d+)([a-z]?)_", nb.name)
        out[exp[0]] = (int(num[1]), num[2]) if num else None
    return out


def focusclip_imports(path: Path) -> set:
    "The focusclip modules a file imports anywhere in it (top level or inside functions)."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("focusclip.")}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1 and mod: found.add(mod.split(".")[0])
            elif node.level == 0 and mod.startswith("focusclip."): found.add(mod.split(".")[1])
            elif (node.level == 1 and not mod) or mod == "focusclip": found |= {a.name for a in node.names}
    return found


def library_graph() -> dict:
    return {p.stem: focusclip_imports(p) - {p.stem} for p in sorted(PKG.glob("*.py")) if not p.stem.startswith("_")}


def find_cycle(graph: dict):
    "A list of modules forming a cycle, or None."
    state, stack = {}, []
    def visit(m):
        state[m] = 1; stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1: return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)): return c
        state[m] = 2; stack.pop()
    for m in sorted(graph):
        if m not in state and (c := visit(m)): return c


def test_graph_reader_sees_every_kind_of_import(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .data import Record\nimport focusclip.synth as s\ndef g():\n    from focusclip.heatmaps import x\n"
                 "    from focusclip import pose, train\n    from . import report\nimport os\nfrom pathlib import Path\n")
    assert focusclip_imports(f) == {"data", "synth", "heatmaps", "pose", "train", "report"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_every_module_has_a_notebook():
    mods = notebook_modules()
    assert set(library_graph()) == set(mods), "modules and notebooks differ"


def test_no_cycle():
    assert find_cycle(library_graph()) is None


def test_no_import_up_the_data_flow():
    order, bad = notebook_modules(), []
    for mod, deps in library_graph().items():
        if mod in OUTSIDE_FLOW: continue
        bad += [f"{mod} ({order[mod]}) imports {d} ({order[d]})" for d in sorted(deps)
                if d in order and d not in OUTSIDE_FLOW and order[d] >= order[mod]]
    assert not bad, "imports up the data flow (a module may import only earlier notebooks' modules):\n" + "\n".join(bad)


def test_no_library_module_imports_the_fixtures():
    users = sorted(m for m, deps in library_graph().items() if OUTSIDE_FLOW & deps and m not in OUTSIDE_FLOW)
    assert not users, f"library modules importing focusclip.testing: {users}"
    assert all(notebook_modules()[m] is None for m in OUTSIDE_FLOW)  # outside the numbering


@pytest.mark.parametrize("limit", [520])
def test_modules_stay_small(limit):
    sizes = {p.stem: len(p.read_text().splitlines()) for p in PKG.glob("*.py") if not p.stem.startswith("_")}
    assert not {m: n for m, n in sizes.items() if n > limit}, f"modules over {limit} lines: {sizes}"


def test_study_fingerprints_every_module_its_numbers_depend_on():
    "`study.SOURCES` (hashed into every point's fingerprint) is the study's import closure, less the report that only draws it."
    from focusclip.study import SOURCES
    graph, seen, todo = library_graph(), set(), ["study"]
    while todo:
        m = todo.pop()
        if m not in seen: seen.add(m); todo += sorted(graph[m])
    assert set(SOURCES) == seen - {"study", "report"}
