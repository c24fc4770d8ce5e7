"""The package as shipped and as structured: a built wheel installs and runs on its own
(``proto/`` and ``kernels/`` mapped into ``ristretto_cli`` by ``package_dir``), no
module but ``backend.py`` touches CuPy, and the subpackages import each other in one
direction only (no cycles)."""
from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "ristretto_cli"


# --------------------------------------------------------------------------- modules


def package_dirs() -> dict[str, Path]:
    """Package name -> source folder: ``ristretto_cli`` and every ``package_dir`` mapping
    of setup.cfg (``ristretto_cli.proto = proto``, ...)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    dirs = {PACKAGE: REPO / PACKAGE}
    for line in cfg["options"].get("package_dir", "").strip().splitlines():
        name, _, folder = (p.strip() for p in line.partition("="))
        if name:
            dirs[name] = REPO / folder
    return dirs


def package_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (mapped folders too)."""
    modules = {}
    for name, root in package_dirs().items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            modules[".".join([name, *parts])] = path
    return modules


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path, modules: dict, module_level_only: bool = False) -> set[str]:
    """Package modules that ``module`` imports: ``import`` and ``from`` statements
    anywhere (in functions too, unless ``module_level_only``; never under
    ``if TYPE_CHECKING``), relative ones resolved, plus string constants that name a
    package module (registries that ``importlib.import_module`` them by name)."""
    is_pkg = path.name == "__init__.py"
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()

    def add(target: str, names=()):
        for n in names:
            if f"{target}.{n}" in modules:  # `from pkg import submodule`
                found.add(f"{target}.{n}")
            elif target in modules:
                found.add(target)
        if not names and target in modules:
            found.add(target)
        while not names and target not in modules and "." in target:  # `import a.b.func`?
            target = target.rpartition(".")[0]
            if target in modules:
                found.add(target)

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(ast.Module(body=[sub], type_ignores=[]), in_function)
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if inner and module_level_only:
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    if a.name.split(".")[0] == PACKAGE:
                        add(a.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    prefix = base[:len(base) - (child.level - 1)]
                    target = ".".join(prefix + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.split(".")[0] == PACKAGE:
                    add(target, [a.name for a in child.names])
            elif isinstance(child, ast.Constant) and isinstance(child.value, str) \
                    and child.value in modules and not module_level_only:
                found.add(child.value)
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    found.discard(module)
    return found


def unit_of(module: str) -> str:
    """The part of the package a module belongs to: its subpackage (``layers``,
    ``formats``...) or, for a top-level module, the module itself (``backend``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one node, sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(out)


def describe_cycles(edges: dict[tuple[str, str], list[tuple[str, str]]], units: list[list[str]]) -> str:
    """Each cycle with the module imports that close it."""
    lines = []
    for comp in units:
        lines.append(" <-> ".join(comp) + ":")
        for (a, b), why in sorted(edges.items()):
            if a in comp and b in comp:
                lines.append(f"  {a} -> {b}: " + ", ".join(f"{s} imports {t}" for s, t in why[:3])
                             + (f" (+{len(why) - 3} more)" if len(why) > 3 else ""))
    return "\n".join(lines)


def subpackage_cycles() -> tuple[list[list[str]], str]:
    modules = package_modules()
    graph: dict[str, set[str]] = defaultdict(set)
    edges: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for mod, path in modules.items():
        for target in imports_of(mod, path, modules):
            a, b = unit_of(mod), unit_of(target)
            if a != b:
                graph[a].add(b)
                edges[(a, b)].append((mod, target))
    comps = strongly_connected(graph)
    return comps, describe_cycles(edges, comps)


def module_cycles(module_level_only: bool) -> tuple[list[list[str]], str]:
    """Cycles among single modules: through the imports that run when a module is
    imported (``module_level_only``), or through every import, in functions too."""
    modules = package_modules()
    graph = {mod: imports_of(mod, path, modules, module_level_only) for mod, path in modules.items()}
    edges = {(a, b): [(a, b)] for a, targets in graph.items() for b in targets}
    comps = strongly_connected(graph)
    return comps, describe_cycles(edges, comps)


def test_the_walker_resolves_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import a\n")
    (pkg / "sub" / "a.py").write_text("from ..b import f\nif TYPE_CHECKING:\n    from .. import c\n")
    (pkg / "b.py").write_text("def f():\n    from .sub.a import x\n    import ristretto_cli.c\n")
    (pkg / "c.py").write_text("X = 'ristretto_cli.b'\n")
    modules = {f"{PACKAGE}.sub": pkg / "sub" / "__init__.py", f"{PACKAGE}.sub.a": pkg / "sub" / "a.py",
               f"{PACKAGE}.b": pkg / "b.py", f"{PACKAGE}.c": pkg / "c.py"}
    assert imports_of(f"{PACKAGE}.sub", modules[f"{PACKAGE}.sub"], modules) == {f"{PACKAGE}.sub.a"}
    assert imports_of(f"{PACKAGE}.sub.a", modules[f"{PACKAGE}.sub.a"], modules) == {f"{PACKAGE}.b"}
    assert imports_of(f"{PACKAGE}.b", modules[f"{PACKAGE}.b"], modules) == {f"{PACKAGE}.sub.a", f"{PACKAGE}.c"}
    assert imports_of(f"{PACKAGE}.b", modules[f"{PACKAGE}.b"], modules, module_level_only=True) == set()
    assert imports_of(f"{PACKAGE}.c", modules[f"{PACKAGE}.c"], modules) == {f"{PACKAGE}.b"}
    graph = {"b": {"sub"}, "sub": {"b"}, "c": {"b"}}
    assert strongly_connected(graph) == [["b", "sub"]]


def test_every_module_is_found_including_the_mapped_folders():
    modules = package_modules()
    for name in ("ristretto_cli.backend", "ristretto_cli.errors", "ristretto_cli.cli",
                 "ristretto_cli.proto", "ristretto_cli.proto.caffe_pb2", "ristretto_cli.kernels",
                 "ristretto_cli.layers.base", "ristretto_cli.formats.trim"):
        assert name in modules, name


def test_no_import_cycles_between_subpackages():
    comps, text = subpackage_cycles()
    print(text)
    assert not comps, "import cycles between subpackages:\n" + text


def test_no_import_cycles_between_modules_at_import_time():
    comps, text = module_cycles(module_level_only=True)
    print(text)
    assert not comps, "import cycles between modules at import time:\n" + text


def test_no_import_cycles_between_modules():
    comps, text = module_cycles(module_level_only=False)
    print(text)
    assert not comps, "import cycles between modules:\n" + text


def test_only_backend_imports_cupy():
    """backend.py is the one place that asks which array module this is."""
    offenders = []
    for mod, path in package_modules().items():
        if mod == f"{PACKAGE}.backend":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) \
                    in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]
            offenders += [f"{mod}:{node.lineno} imports {n}" for n in names
                          if n.split(".")[0] in ("cupy", "cupyx")]
    assert not offenders, offenders


def test_backend_stays_light():
    """backend.py imports nothing of the library but errors (no layers, no net)."""
    modules = package_modules()
    path = modules[f"{PACKAGE}.backend"]
    assert imports_of(f"{PACKAGE}.backend", path, modules) <= {f"{PACKAGE}.errors"}


# --------------------------------------------------------------------------- the wheel


def _build_wheel(tmp: Path) -> Path:
    """A wheel built offline from a copy of the tracked sources (the checkout's
    ``build/`` is left alone)."""
    src = tmp / "src"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True)
    if listed.returncode != 0:
        pytest.skip(f"git ls-files failed: {listed.stderr.decode(errors='replace').strip()}")
    for rel in filter(None, listed.stdout.decode().split("\0")):
        if rel.startswith(("tests/", "benchmarks/", "models/")) or not (REPO / rel).is_file():
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, src / rel)
    dist = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(dist), str(src)], capture_output=True, text=True)
    wheels = sorted(dist.glob("*.whl"))
    if r.returncode != 0 or not wheels:
        pytest.skip(f"cannot build a wheel offline here: {r.stderr.strip()[-500:]}")
    return wheels[0]


def _venv_with(wheel: Path, tmp: Path) -> Path:
    """A fresh venv holding the wheel (non-editable); the dependencies come from this
    interpreter's site-packages through a .pth file, so nothing is downloaded."""
    venv = tmp / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot create a venv: {r.stderr.strip()[-500:]}")
    python = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    Path(site, "_outer_dependencies.pth").write_text("\n".join(deps) + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                        "--no-index", str(wheel)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot install the wheel into a venv with this pip: {r.stderr.strip()[-500:]}")
    return venv


def test_wheel_installs_and_runs_without_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    venv = _venv_with(wheel, tmp_path)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    probe = (
        "import pathlib, ristretto_cli, ristretto_cli.proto.caffe_pb2 as pb, ristretto_cli.kernels as k\n"
        "from importlib import resources\n"
        "print(pathlib.Path(ristretto_cli.__file__).resolve())\n"
        "print(pathlib.Path(pb.__file__).resolve())\n"
        "print(resources.files('ristretto_cli.proto').joinpath('caffe.proto').is_file())\n"
        "print(k.names())\n"
        "print(pb.LayerParameter().quantization_param.bw_layer_in)\n"
    )
    r = subprocess.run([str(bindir / "python"), "-c", probe], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    package_file, pb_file, proto_shipped, names, bw = r.stdout.strip().splitlines()
    site = venv.resolve()
    assert Path(package_file).is_relative_to(site), package_file
    assert Path(pb_file).is_relative_to(site), pb_file
    assert proto_shipped == "True"
    shipped = sorted(p.name for p in (REPO / "kernels").iterdir() if p.name.endswith((".cu", ".cuh")))
    assert names == repr(shipped)
    assert bw == "32"
    r = subprocess.run([str(bindir / "ristretto"), "--help"], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "quantize" in r.stdout and "finetune" in r.stdout
