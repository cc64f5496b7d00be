"""The package's import structure (issue 23): the library never imports the benchmark, and no
private name crosses a module boundary."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "hybridcert"


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def _modules(folder: Path):
    return sorted(p for p in folder.rglob("*.py") if "egg-info" not in str(p))


def test_the_library_does_not_import_the_benchmark():
    offenders = []
    for path in _modules(PACKAGE):
        if (PACKAGE / "bench") in path.parents:
            continue
        for line, module, names in _imports(path):
            if module == "hybridcert.bench" or module.startswith("hybridcert.bench."):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            elif module == "hybridcert" and "bench" in names:
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports hybridcert.bench")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("folder", ["src", "benchmarks"])
def test_no_private_name_is_imported_across_modules(folder):
    offenders = []
    for path in _modules(ROOT / folder):
        for line, module, names in _imports(path):
            if not module.startswith("hybridcert"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            hidden = [part for part in module.split(".") if part.startswith("_")
                      and part not in ("__init__", "_validation")]
            if private or hidden:
                offenders.append(f"{path.relative_to(ROOT)}:{line} from {module} import "
                                 f"{', '.join(private) or '...'}")
    assert not offenders, "\n".join(offenders)


def test_the_layout_test_sees_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from hybridcert.certificate.bounds import _secret\n"
                   "from hybridcert.bench.runner import run\n")
    found = list(_imports(bad))
    assert (1, "hybridcert.certificate.bounds", ["_secret"]) in found
    assert (2, "hybridcert.bench.runner", ["run"]) in found
