"""The architecture of ARCHITECTURE.md, checked on the source: which layer may import which, thin
stages that never import each other, Typer only in command-line modules, project imports at the
top of a module, one docstring per module, one public name per thing, short modules."""

from __future__ import annotations

import ast
import re
from collections import defaultdict

import pytest
import yaml
from import_graph import REPO, all_modules, closure, imports_of, module_file

# Every stage is a package named after it: its command in ``__main__.py``, its core beside it.
STAGE_PACKAGES = ("data", "folds", "train", "evaluate", "submit", "benchmark", "leaderboard",
                  "refine", "visualize")
STAGES = {f"pipeline.{name}.__main__" for name in STAGE_PACKAGES}
CLI = STAGES | {"pipeline.cli"} | {m for m in all_modules()
                                    if m.startswith("pipeline.benchmark")}

# Layers in data-flow order: a module may import its own layer and the layers listed for it.
FOUNDATION = {"pipeline", "pipeline.resources", "pipeline.errors", "pipeline.typed",
              "pipeline.config", "pipeline.atomic", "pipeline.faults", "pipeline.figures",
              "pipeline.keys", "pipeline.device", "pipeline.distributed", "pipeline.runs",
              "pipeline.records", "pipeline.kaggle", "pipeline.rle", "pipeline.dice",
              "pipeline.losses", "pipeline.postprocess", "pipeline.schedule"}
LAYERS = {  # package -> the packages it may use besides the foundation and itself
    "pipeline.data": set(),
    "pipeline.folds": {"pipeline.data"},
    "pipeline.models": set(),
    "pipeline.refine": {"pipeline.data", "pipeline.folds", "pipeline.models"},
    "pipeline.inference": {"pipeline.data", "pipeline.models", "pipeline.refine"},
    "pipeline.train": {"pipeline.data", "pipeline.folds", "pipeline.models", "pipeline.refine"},
    "pipeline.evaluate": {"pipeline.data", "pipeline.folds", "pipeline.models",
                          "pipeline.inference"},
    "pipeline.submit": {"pipeline.data", "pipeline.models", "pipeline.inference"},
    "pipeline.visualize": {"pipeline.data", "pipeline.models", "pipeline.inference"},
    "pipeline.leaderboard": set(),
}
# Modules over ~300 lines, each with the one job that needs the length.
LONG_OK = {
    "pipeline/config.py": "the one config object: every setting's type and meaning, and loading",
    "pipeline/data/validate.py": "every check of a Kaggle-layout folder, each with its message",
    "pipeline/data/demo_car.py": "the demo car's 3-D geometry",
    "pipeline/inference/engine.py": "the engine's settings, the ensemble and its prediction loop",
}
SHARED_NAMES = {"app", "main", "register"}  # the command-line convention of every stage


def layer_of(module: str) -> str:
    if module in CLI:
        return "cli"
    if module in FOUNDATION:
        return "foundation"
    for package in LAYERS:
        if module == package or module.startswith(package + "."):
            return package
    return "cli"


def test_the_stage_and_layer_lists_name_real_modules():
    modules = set(all_modules())
    assert STAGES <= modules and FOUNDATION <= modules and set(LAYERS) <= modules
    # every module belongs to exactly one place: the foundation, a layer, or the CLI
    unplaced = [m for m in modules if layer_of(m) == "cli" and m not in CLI]
    assert not unplaced, f"modules outside every layer (add them to a layer): {unplaced}"


@pytest.mark.parametrize("module", all_modules())
def test_layers_import_only_what_they_may(module):
    layer = layer_of(module)
    for imported, _ in imports_of(module):
        target = layer_of(imported)
        if layer == "cli":
            # stages use every core but never another stage
            assert imported not in STAGES or imported == module \
                or (module.startswith("pipeline.benchmark") and
                    imported.startswith("pipeline.benchmark")), \
                f"{module} imports the stage {imported}"
            continue
        assert target != "cli", f"core module {module} imports the command-line module {imported}"
        if layer == "foundation":
            assert target == "foundation", f"foundation module {module} imports {imported}"
        else:
            allowed = {"foundation", layer} | LAYERS[layer]
            assert target in allowed, f"{module} ({layer}) may not import {imported} ({target})"


def test_no_core_needs_training_or_a_stage_command():
    """Only the train stage's own package (and the benchmarks, which measure it) reach
    pipeline.train; no core module ever reaches a stage's command."""
    for module in all_modules():
        if module in CLI:
            continue
        needed = closure(module)
        assert not needed & STAGES, (module, needed & STAGES)
        if not module.startswith("pipeline.train"):
            assert not any(m.startswith("pipeline.train") for m in needed), module


def test_every_dvc_stage_is_a_package_named_after_it():
    """A reader finds a stage's command and its core by the stage's name in dvc.yaml."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, stage in dvc.items():
        cmd = stage.get("do", stage)["cmd"]
        package = re.search(r"python -m pipeline\.(\w+)", cmd)[1]
        assert package == name, f"dvc.yaml stage {name} runs pipeline.{package}"
        assert module_file(f"pipeline.{name}.__main__") is not None, name
    for name in STAGE_PACKAGES:
        assert (REPO / "pipeline" / name / "__main__.py").is_file(), name


@pytest.mark.parametrize("module", all_modules())
def test_typer_only_in_command_line_modules(module):
    tree = ast.parse(module_file(module).read_text())
    uses_typer = any(
        (isinstance(n, ast.Import) and any(a.name == "typer" for a in n.names))
        or (isinstance(n, ast.ImportFrom) and (n.module or "").startswith("typer"))
        for n in ast.walk(tree))
    assert not uses_typer or module in CLI, f"core module {module} imports Typer"


@pytest.mark.parametrize("module", all_modules())
def test_project_imports_sit_at_the_top(module):
    late = sorted(m for m, top in imports_of(module) if not top)
    assert not late, f"{module} imports {late} inside a function; import at the top"


@pytest.mark.parametrize("module", all_modules())
def test_every_module_says_its_job(module):
    tree = ast.parse(module_file(module).read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc.split()) >= 4, f"{module} needs a docstring saying its one job"


def test_no_two_public_names_for_different_things():
    where = defaultdict(list)
    for module in all_modules():
        tree = ast.parse(module_file(module).read_text())
        for node in tree.body:
            names = []
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            for name in names:
                if not name.startswith("_") and name not in SHARED_NAMES:
                    where[name].append(module)
    twice = {name: mods for name, mods in where.items() if len(mods) > 1}
    assert not twice, f"one name, several definitions: {twice}"


def test_modules_stay_short():
    long = {}
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        lines = len(path.read_text().splitlines())
        if lines > 300 and rel not in LONG_OK:
            long[rel] = lines
    assert not long, f"modules past ~300 lines (split them, or say why in LONG_OK): {long}"


def test_architecture_md_names_every_module():
    """Each module is named under its package's bold heading (the foundation's under
    **Foundation**), and every name there is a module on disk; ``__main__`` (each stage's
    command) is said once for all."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    named, package = set(), None
    for token in re.findall(r"\*\*([\w ,.]+?)\*\*|`(\w+\.py)`", text):
        heading, module = token
        if heading:
            word = heading.split()[0].lower()
            package = "" if word == "foundation" else (
                word if (REPO / "pipeline" / word).is_dir() else None)
        elif package is not None:
            named.add(f"pipeline/{package + '/' if package else ''}{module}")
    on_disk = {str(p.relative_to(REPO)) for p in (REPO / "pipeline").rglob("*.py")
               if p.name not in ("__init__.py", "__main__.py")}
    assert on_disk - named == set(), f"ARCHITECTURE.md does not name {sorted(on_disk - named)}"
    assert named - on_disk == set(), f"ARCHITECTURE.md names missing {sorted(named - on_disk)}"
