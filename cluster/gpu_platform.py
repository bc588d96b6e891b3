"""The GPU image's platform (cluster/gpu.env) and its locks, resolved for Linux x86_64 from any machine.

    python -m cluster.gpu_platform            # re-resolve requirements-gpu.lock and requirements-vllm-gpu.lock

Two environments, one FAISS package each, the same CUDA build of torch in both:
- the project (requirements-gpu.lock): requirements.lock with faiss-gpu instead of faiss-cpu, plus the CUDA
  wheels that torch and faiss-gpu declare (the CPU lock leaves them out);
- vLLM's own venv (requirements-vllm-gpu.lock): vLLM pins older transformers and fastapi than the project.
Resolution only (uv pip compile against the package index), so it runs without a GPU or Docker. The
`exclude-newer` time in a lock's header makes it reproducible: the same command gives the same lock.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GPU_ENV = ROOT / "cluster" / "gpu.env"
CPU_LOCK = ROOT / "requirements.lock"
LOCKS = {"gpu": ROOT / "requirements-gpu.lock", "vllm": ROOT / "requirements-vllm-gpu.lock"}
EXCLUDE_NEWER = re.compile(r"^# exclude-newer: (\S+)$", re.M)


class LockError(RuntimeError):
    pass


def load_platform(path: Path = GPU_ENV) -> dict[str, str]:
    """NAME=value lines of gpu.env (comments and blank lines skipped)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
            raise LockError(f"{path}:{number}: {line!r} is not NAME=value")
        values[name] = value
    return values


def pins(lock_text: str) -> dict[str, str]:
    """{normalised name: version} of the `name==version` lines of a lock."""
    out = {}
    for line in lock_text.splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, _, version = line.strip().partition("==")
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def lock_inputs(name: str, platform: dict[str, str]) -> tuple[list[str], list[str]]:
    """(requirements, constraints) a GPU lock is resolved from."""
    if name == "gpu":
        kept = [line for line in CPU_LOCK.read_text().splitlines()
                if "==" in line and not line.startswith("#") and not line.startswith("faiss-cpu==")]
        return [*kept, platform["FAISS_GPU"]], []
    if name == "vllm":
        return [platform["VLLM"]], [f"torch=={platform['TORCH_VERSION']}"]
    raise LockError(f"unknown GPU lock {name!r}; known: {sorted(LOCKS)}")


def uv_binary() -> str:
    found = Path(sys.executable).with_name("uv")
    if found.exists():
        return str(found)
    on_path = shutil.which("uv")
    if on_path is None:
        raise LockError("uv not found next to the interpreter or on PATH (make env installs it)")
    return on_path


def resolve(name: str, exclude_newer: str, platform: dict[str, str] | None = None,
            pinned_to: Path | None = None) -> str:
    """The lock text `name` resolves to for the GPU platform, as of `exclude_newer` (RFC 3339).
    `pinned_to`: a lock whose versions constrain the resolution. The result equals that lock exactly
    when the lock is a complete, consistent resolution of today's requirements, whatever releases
    the index has gained since (a mirror can list a release late, with an earlier upload time)."""
    platform = platform or load_platform()
    requirements, constraints = lock_inputs(name, platform)
    with tempfile.TemporaryDirectory() as tmp:
        req, con, out = Path(tmp) / "requirements.in", Path(tmp) / "constraints.txt", Path(tmp) / "out.txt"
        req.write_text("\n".join(requirements) + "\n")
        con.write_text("\n".join(constraints) + "\n")
        # No local wheel directories (the CPU torch of this machine): PyPI's builds are what the image gets.
        # --refresh: a cached index page could hide releases that exclude-newer admits (not reproducible).
        pins = ["-c", str(pinned_to)] if pinned_to else []
        argv = [uv_binary(), "pip", "compile", str(req), "-c", str(con), *pins, "-o", str(out), "-q", "--no-header",
                "--no-annotate", "--no-config", "--no-python-downloads", "--refresh", "--exclude-newer", exclude_newer,
                "--python-platform", platform["PYTHON_PLATFORM"], "--python-version", platform["PYTHON_VERSION"]]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise LockError(f"{LOCKS[name].name} does not resolve for {platform['PYTHON_PLATFORM']} / Python "
                            f"{platform['PYTHON_VERSION']}:\n{done.stderr.strip()}")
        body = out.read_text()
    env = "project env" if name == "gpu" else "vLLM venv"
    header = (f"# The GPU image's {env}: full closure for {platform['PYTHON_PLATFORM']} / Python "
              f"{platform['PYTHON_VERSION']},\n# installed with --no-deps by cluster/Dockerfile. "
              f"Regenerate with `make gpu-lock` (cluster/gpu_platform.py).\n# exclude-newer: {exclude_newer}\n")
    return header + body


def exclude_newer_of(lock: Path) -> str:
    found = EXCLUDE_NEWER.search(lock.read_text())
    if found is None:
        raise LockError(f"{lock}: no '# exclude-newer:' header line")
    return found.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    parser.add_argument("--exclude-newer", default=now, help="resolve as of this time (default: now)")
    args = parser.parse_args()
    for name, path in LOCKS.items():
        path.write_text(resolve(name, args.exclude_newer))
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
