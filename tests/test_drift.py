"""dvc.yaml against the code it runs: deps and params that cannot drift.

Each stage's import closure is derived from its script through src/gmvol (every `import` and
`from ... import` anywhere in a module, plus the parent packages Python runs on the way); every
module in it must be covered by a declared dep, and every declared src dep must cover one of
them. The params a stage script reads (`section(params, "<key>")`, or the whole mapping handed
to a function) must be covered by its declared params.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

from gmvol.layout import EvalFiles, SaliencyFiles, file_names

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
WHOLE_FILE = "*"


def stages() -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages, `foreach` ones by their `do` block."""
    raw = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in raw.items()}


def _module_file(dotted: str) -> Path | None:
    base = SRC.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path) -> set[str]:
    """Dotted gmvol modules that `path` imports (a `from pkg import name` may name a submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "gmvol"}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the drift test follows absolute ones"
            if node.module and node.module.split(".")[0] == "gmvol":
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}")}
    parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
    return {m for m in found | parents if _module_file(m)}


def import_closure(script: Path) -> set[Path]:
    """Every src/gmvol file that running `script` imports, relative to the repository root."""
    seen: set[str] = set()
    todo = list(_imported(script))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_imported(_module_file(module)) - seen)
    return {_module_file(m).relative_to(ROOT) for m in seen}


def _exempt(module: Path) -> bool:
    """An __init__.py holding only a docstring runs nothing a result could depend on."""
    body = ast.parse((ROOT / module).read_text()).body
    return module.name == "__init__.py" and all(
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def _covers(dep: str, module: Path) -> bool:
    return module == Path(dep) or Path(dep) in module.parents


def undeclared_modules(spec: dict[str, Any]) -> list[Path]:
    """Modules the stage imports that none of its deps covers."""
    script = ROOT / spec["cmd"].split()[1]
    deps = [str(d) for d in spec["deps"]]
    return sorted(m for m in import_closure(script) if not _exempt(m) and not any(_covers(d, m) for d in deps))


def params_read(script: Path) -> set[str]:
    """Dotted params keys the stage script reads; WHOLE_FILE when it hands the mapping on."""
    tree = ast.parse(script.read_text())
    holders = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
               and getattr(n.value.func, "id", "") == "read_params" for t in n.targets}
    keys: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", "")
        if name == "section":
            key = node.args[1]
            if isinstance(key, ast.JoinedStr):  # f"models.{args.model}": the foreach item
                keys.add("".join(v.value if isinstance(v, ast.Constant) else "${item}" for v in key.values))
            else:
                keys.add(key.value)
        elif name != "read_params":
            args = [*node.args, *(k.value for k in node.keywords)]
            if any(isinstance(a, ast.Name) and a.id in holders for a in args):
                keys.add(WHOLE_FILE)
    return keys


def declared_params(spec: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for entry in spec.get("params", []):
        if isinstance(entry, dict):  # `- params.yaml:` (all of it) or `- file: [keys]`
            (file, keys), = entry.items()
            assert file == "params.yaml", file
            out |= {WHOLE_FILE} if not keys else set(keys)
        else:
            out.add(entry)
    return out


def uncovered_params(spec: dict[str, Any]) -> list[str]:
    declared = declared_params(spec)
    read = params_read(ROOT / spec["cmd"].split()[1])
    if WHOLE_FILE in declared:
        return []
    return sorted(k for k in read if not any(k == d or k.startswith(d + ".") for d in declared))


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_declares_its_script_and_every_module_it_imports(name: str) -> None:
    spec = stages()[name]
    assert spec["cmd"].split()[1] in spec["deps"], f"{name}: its script is not a dep"
    assert undeclared_modules(spec) == [], f"{name}: imports modules dvc.yaml does not list as deps"


@pytest.mark.parametrize("name", sorted(stages()))
def test_every_declared_src_dep_is_needed(name: str) -> None:
    """Delete any one src dep and the check above fails: no dep is decoration."""
    spec = stages()[name]
    src_deps = [d for d in spec["deps"] if str(d).startswith("src/")]
    assert src_deps, f"{name}: no src dep"
    for dep in src_deps:
        fewer = {**spec, "deps": [d for d in spec["deps"] if d != dep]}
        assert undeclared_modules(fewer), f"{name}: dep {dep} covers nothing the stage imports"


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_declares_the_params_it_reads(name: str) -> None:
    spec = stages()[name]
    reads = params_read(ROOT / spec["cmd"].split()[1])
    assert reads or not declared_params(spec), f"{name}: declares params but reads none (or the test cannot see how)"
    assert uncovered_params(spec) == [], f"{name}: reads params dvc.yaml does not declare"


def test_the_drift_checks_catch_a_missing_dep_and_a_missing_param() -> None:
    spec = stages()["saliency"]
    without_regions = {**spec, "deps": [d for d in spec["deps"] if d != "src/gmvol/regions.py"]}
    assert Path("src/gmvol/regions.py") in undeclared_modules(without_regions)
    assert uncovered_params({**spec, "params": ["evaluate"]}) == ["saliency"]
    train = stages()["train"]
    without_model = [p for p in train["params"] if p != "models.${item}"]
    assert uncovered_params({**train, "params": without_model}) == ["models.${item}"]


def test_report_declares_the_whole_params_file_it_shows() -> None:
    report = stages()["report"]
    assert WHOLE_FILE in params_read(ROOT / "stages" / "report.py")
    assert uncovered_params({**report, "params": ["study"]}) == [WHOLE_FILE]


def _outs(spec: dict[str, Any]) -> list[str]:
    names = []
    for kind in ("outs", "metrics", "plots"):
        for entry in spec.get(kind, []):
            names.append(Path(next(iter(entry)) if isinstance(entry, dict) else entry).name)
    return names


def test_per_model_output_files_match_the_layout_in_src() -> None:
    assert sorted(_outs(stages()["evaluate"])) == sorted(file_names(EvalFiles))
    assert sorted(_outs(stages()["saliency"])) == sorted(file_names(SaliencyFiles))
