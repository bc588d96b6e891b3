"""pyproject.toml declares what the code imports, in ranges the lock satisfies; a built wheel installed
outside the repository runs `clara` and finds the configs, examples and job specs it ships."""
from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("clara_ray", "pipelines", "serve", "bench", "experiments", "cluster")
# Imported but not a dependency to declare: vLLM runs in a venv of its own (serve/backends/vllm_worker.py).
NOT_DECLARED = {"vllm"}
# Extras that pin on purpose: the FAISS builds (the CPU and the GPU lock each hold one), the test runner.
PINNED_EXTRAS = {"cpu", "gpu", "test"}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _requirements(extras: bool = True) -> list[tuple[str, Requirement]]:
    project = _pyproject()["project"]
    found = [("core", Requirement(r)) for r in project["dependencies"]]
    if extras:
        found += [(extra, Requirement(r)) for extra, reqs in project["optional-dependencies"].items() for r in reqs]
    return found


def _imported_top_level_modules() -> dict[str, str]:
    """Third-party top-level module -> a file importing it, over every packaged module."""
    local = set(PACKAGES) | set(sys.stdlib_module_names) | {"__future__"}
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for name in names:
                    top = name.split(".")[0]
                    if top not in local:
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


def _declared(providers: dict[str, list[str]]) -> set[str]:
    """Declared distributions, plus what a declared meta-package (one without modules) installs:
    `docling` is such a package, its modules come from docling-slim."""
    declared = {canonicalize_name(req.name) for _, req in _requirements()}
    with_modules = {canonicalize_name(d) for dists in providers.values() for d in dists}
    for meta in declared - with_modules:
        try:
            requires = importlib.metadata.requires(meta) or []
        except importlib.metadata.PackageNotFoundError:  # an extra's package not installed here (vllm)
            continue
        declared |= {canonicalize_name(Requirement(r).name) for r in requires if "extra ==" not in r}
    return declared


def test_every_imported_package_is_declared():
    providers = importlib.metadata.packages_distributions()
    declared = _declared(providers)
    missing = {}
    for module, where in _imported_top_level_modules().items():
        if module in NOT_DECLARED:
            continue
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        assert dists, f"{where} imports {module}, which no installed distribution provides"
        if not dists & declared:
            missing[module] = (where, sorted(dists))
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_ranges_are_compatible_and_admit_the_locked_versions():
    locked = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            locked[canonicalize_name(name)] = version.strip()
    for extra, req in _requirements():
        name = canonicalize_name(req.name)
        if extra in PINNED_EXTRAS or req.url or name == "clara-ray":
            continue
        operators = {spec.operator for spec in req.specifier}
        if name == "torch":  # any other request resolves to a CUDA build on a CPU machine
            assert str(req.specifier) == "==2.13.0"
            continue
        assert {">=", "<"} <= operators, f"{req} ({extra}): give a compatible range >=X.Y,<next-major"
        assert req.specifier.contains(locked[name]), f"{req} ({extra}) excludes the locked {name}=={locked[name]}"


def _project_files(dest: Path) -> None:
    """The files git would ship (tracked, or new and not ignored), copied: the build writes into its tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _shipped_in_repo() -> set[str]:
    """What an installed clara-ray must carry: every packaged module and data file, every config and example."""
    files = {str(p.relative_to(REPO)) for package in PACKAGES for p in (REPO / package).rglob("*.py")
             if "__pycache__" not in p.parts}
    package_data = _pyproject()["tool"]["setuptools"].get("package-data", {})
    files |= {str(p.relative_to(REPO)) for package, globs in package_data.items() for pattern in globs
              for p in (REPO / package.replace(".", "/")).glob(pattern)}
    shipped = [*(REPO / "configs").rglob("*.yaml"), *(REPO / "experiments/configs").glob("*.yaml"),
               REPO / "serve/config.yaml", *(REPO / "cluster/jobs").glob("*.yaml"),
               *(p for p in (REPO / "examples").rglob("*") if p.is_file())]
    return files | {f"clara_ray/_shipped/{p.relative_to(REPO)}" for p in shipped}


RESOLVES = """
from pathlib import Path
import clara_ray
from clara_ray.config import load_config
from clara_ray.demo.config import DemoConfig
from clara_ray.evaluation.config import EvalConfig
from clara_ray.train.config import TrainConfig
assert "site-packages" in clara_ray.__file__, clara_ray.__file__
demo = load_config(DemoConfig, "configs/demo.yaml")
inputs = [demo.documents, demo.ingest_config, demo.serve_config, *demo.train_configs.values(),
          *(p for paths in demo.extra_training_data.values() for p in paths)]
stage1 = load_config(TrainConfig, "configs/train/cpu/compress_pretrain.yaml")
inputs += [Path(p) for p in stage1.data.paths]
evaluation = load_config(EvalConfig, "experiments/configs/eval_squad_cpu.yaml",
                         ["data.path=examples/data/sample_squad.json"])
inputs.append(Path(evaluation.data.path))
missing = [str(p) for p in inputs if not p.exists()]
assert not missing, missing
print("resolved", len(inputs))
"""


@pytest.mark.slow
def test_wheel_installed_outside_the_repo_runs_clara_and_finds_its_shipped_files(tmp_path):
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed (make env installs it into .venv)")
    source, dist, venv, outside = (tmp_path / name for name in ("src", "dist", "venv", "elsewhere"))
    _project_files(source)
    # sdist, then the wheel from the sdist: MANIFEST.in and setup.py's copy are both exercised.
    subprocess.run([uv, "build", "-q", "-o", str(dist), str(source)], check=True, capture_output=True)
    wheel = next(dist.glob("*.whl"))
    missing = _shipped_in_repo() - set(zipfile.ZipFile(wheel).namelist())
    assert not missing, f"not in the wheel: {sorted(missing)}"

    # A fresh environment with the wheel alone; its dependencies come from this one's site-packages
    # (a .pth line; nothing is downloaded), after the wheel's own files on sys.path.
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([uv, "pip", "install", "-q", "--python", str(python), "--no-deps", str(wheel)], check=True,
                   capture_output=True)

    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=outside, env=env, capture_output=True,
                              text=True, timeout=300)

    top = run("clara", "--help")
    assert top.returncode == 0, top.stderr
    for step in ("ingest", "train", "precompress", "serve", "eval", "demo", "submit", "bench", "reproduce"):
        assert f" {step} " in top.stdout, step
    helped = run("clara", "precompress", "--help")
    assert helped.returncode == 0 and "clara precompress --checkpoint" in helped.stdout, helped.stderr
    resolved = run("python", "-c", RESOLVES)
    assert resolved.returncode == 0, resolved.stderr
    # Shipped configs and job specs by their documented paths, through the installed command.
    wrong_stage = run("clara", "train", "--stage", "instruct", "--config", "configs/train/cpu/compress_pretrain.yaml")
    assert wrong_stage.returncode == 2 and "is a compress_pretrain config, not instruct" in wrong_stage.stderr
    spec = run("clara", "submit", "cluster/jobs/ingest.yaml", "--dry-run", "--set", "CLARA_SHARED=/shared")
    assert spec.returncode == 0 and "pipelines.ingest --config configs/ingest.yaml" in spec.stdout, spec.stderr
