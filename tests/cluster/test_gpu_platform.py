"""The GPU platform (cluster/gpu.env) against the Dockerfile, the cluster YAMLs and the GPU locks.

No GPU and no Docker here: the locks are checked by resolving them for Linux x86_64 against PyPI, the
image by reading its Dockerfile, the machine images and host init steps by reading (and, for the driver
wait, running) what the cluster launcher would run.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import ray
import yaml

from cluster.gpu_platform import CPU_LOCK, LOCKS, exclude_newer_of, load_platform, pins, resolve

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = load_platform()
CLUSTERS = {"aws": ROOT / "cluster/aws.yaml", "gcp": ROOT / "cluster/gcp.yaml"}
DOCKERFILE = (ROOT / "cluster/Dockerfile").read_text()
SHARED = "/mnt/cluster_storage/clara-ray"  # CLARA_SHARED in docs/cluster.md and the job specs' examples


def _major_minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _cluster(cloud: str) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(yaml.safe_load(CLUSTERS[cloud].read_text()))
    validate_config(config)
    return config


def _gpu_wait_command(config: dict) -> str:
    (command,) = [c for c in config["initialization_commands"] if "nvidia-smi" in c]
    return command


# ------------------------------------------------------------------ locks
def test_each_environment_has_one_faiss_and_the_same_cuda_torch():
    gpu, vllm = (pins(LOCKS[name].read_text()) for name in ("gpu", "vllm"))
    assert "faiss-gpu" in gpu and "faiss-cpu" not in gpu
    assert not [name for name in vllm if name.startswith("faiss")]
    assert "vllm" not in gpu and f"vllm=={vllm['vllm']}" == PLATFORM["VLLM"]
    for lock in (gpu, vllm):
        assert lock["torch"] == PLATFORM["TORCH_VERSION"]
        # the CUDA runtime wheel torch pulls in is the CUDA build gpu.env (and its driver floor) is about
        assert _major_minor(lock["nvidia-cuda-runtime"]) == _major_minor(PLATFORM["TORCH_CUDA"])
    # the image runs the versions the CPU tests run: only faiss and the CUDA wheels differ
    cpu = pins(CPU_LOCK.read_text())
    assert {n: v for n, v in cpu.items() if n != "faiss-cpu"}.items() <= gpu.items()


def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/vllm/", timeout=20).close()
        return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LOCKS))
def test_gpu_lock_is_what_its_requirements_resolve_to_on_linux_x86_64(name):
    """`uv pip compile` for the GPU platform, as of the lock's exclude-newer time and held to its
    versions, gives the lock: it is the complete closure of today's requirements (a new or changed
    requirement adds a package or fails to resolve). Not a fresh resolution, which changes when the
    index lists a release late, as PyPI's mirror here did (sentry-sdk 2.76.0, 2026-12-04)."""
    if not _pypi_reachable():
        pytest.skip("PyPI (https://pypi.org) is unreachable: GPU lock resolution not checked")
    lock = LOCKS[name]
    resolved = resolve(name, exclude_newer_of(lock), pinned_to=lock)
    assert resolved == lock.read_text(), f"{lock.name} is stale: run `make gpu-lock`"


# ------------------------------------------------------------------ image
def test_dockerfile_builds_on_the_platform_base_with_vllm_in_its_own_venv():
    (base,) = re.findall(r"^ARG RAY_IMAGE=(\S+)$", DOCKERFILE, flags=re.M)
    assert base == PLATFORM["RAY_IMAGE"] and re.search(r"^FROM \$\{RAY_IMAGE\}$", DOCKERFILE, flags=re.M)
    # same Ray as the lock (the launcher and the job client refuse mismatched versions), Python 3.11, and a
    # CUDA tag no newer than torch's build: the image's NVIDIA_REQUIRE_CUDA must accept a MIN_DRIVER host
    tag = re.fullmatch(rf"rayproject/ray:{re.escape(ray.__version__)}-py311-cu(\d+)(\d)", base)
    assert tag, base
    assert (int(tag[1]), int(tag[2])) <= _major_minor(PLATFORM["TORCH_CUDA"])
    assert f"CLARA_VLLM_PYTHON={PLATFORM['VLLM_VENV']}/bin/python" in DOCKERFILE
    assert ". cluster/gpu.env" in DOCKERFILE  # the build checks read the platform from its one place
    uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), flags=re.M)[1]
    assert f"pip install uv=={uv}" in DOCKERFILE
    installs = [shlex.split(c) for c in re.findall(r"uv pip install ([^&\\\n]+)", DOCKERFILE)]
    targets = {}
    for argv in installs:
        options = dict(zip(argv, argv[1:]))
        assert "--no-deps" in argv, argv  # every install is a full closure or pinned leaf: nothing resolves
        target = options["--python"]
        for i, arg in enumerate(argv):
            if arg == "-r":
                targets[options["-r"]] = target
            elif not arg.startswith("-") and argv[i - 1] not in ("--python", "-r", "-e"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][\w.+]*", arg), f"unpinned install: {arg}"
    assert targets == {"requirements-gpu.lock": '$(command -v python)',
                       "requirements-vllm-gpu.lock": '$VLLM_VENV/bin/python'}


# ------------------------------------------------------------------ machine images, host init
@pytest.mark.parametrize("cloud", sorted(CLUSTERS))
def test_every_node_boots_an_image_with_the_platform_driver(cloud):
    config = _cluster(cloud)
    for name, node_type in config["available_node_types"].items():
        node = node_type["node_config"]
        image = node["ImageId"] if cloud == "aws" else node["disks"][0]["initializeParams"]["sourceImage"]
        assert image == PLATFORM[f"{cloud.upper()}_IMAGE"], name
    if cloud == "gcp":  # the family names its driver branch
        assert int(re.search(r"-nvidia-(\d+)$", PLATFORM["GCP_IMAGE"])[1]) >= int(PLATFORM["MIN_DRIVER"])
    assert f"-ge {PLATFORM['MIN_DRIVER']} ]" in _gpu_wait_command(config)
    # GPU nodes stay up between the stages of a chain (a fresh node: boot, image pull, model load)
    assert config["idle_timeout_minutes"] >= 30


@pytest.mark.parametrize("cloud", sorted(CLUSTERS))
def test_init_mounts_then_hands_the_shared_dir_to_the_container_user_then_waits_for_gpus(cloud):
    commands = _cluster(cloud)["initialization_commands"]
    position = {key: next(i for i, c in enumerate(commands) if key in c)
                for key in ("mount -t nfs", "chown", "nvidia-smi", "docker")}
    assert position["mount -t nfs"] < position["chown"] < position["nvidia-smi"] < position["docker"]
    owner = f"{PLATFORM['CONTAINER_UID']}:{PLATFORM['CONTAINER_GID']}"
    assert f"sudo chown {owner} {SHARED}" in commands[position["chown"]]
    docker = _cluster(cloud)["docker"]
    assert "-v /mnt/cluster_storage:/mnt/cluster_storage" in docker["run_options"]


def _run_gpu_wait(tmp_path: Path, vendor: str, driver: str | None) -> subprocess.CompletedProcess:
    """The init command as bash runs it, with a stand-in PCI vendor file and nvidia-smi (no GPU here)."""
    command = _gpu_wait_command(_cluster("aws"))
    assert command == _gpu_wait_command(_cluster("gcp"))
    (tmp_path / "vendor").write_text(vendor + "\n")
    command = command.replace("/sys/bus/pci/devices/*/vendor", str(tmp_path / "vendor"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho {driver}\n" if driver else "#!/bin/sh\nexit 1\n")
    smi.chmod(0o755)
    return subprocess.run(["bash", "-c", command.replace("sleep 10", "sleep 0")], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, timeout=60)


def test_gpu_wait_skips_cpu_nodes_and_refuses_an_old_driver(tmp_path):
    assert _run_gpu_wait(tmp_path, "0x8086", None).returncode == 0  # no NVIDIA device: nothing to wait for
    assert _run_gpu_wait(tmp_path, "0x10de", f"{PLATFORM['MIN_DRIVER']}.65.06").returncode == 0
    old = _run_gpu_wait(tmp_path, "0x10de", "550.90.07")
    assert old.returncode == 1 and "NVIDIA driver '550.90.07'" in old.stdout
    missing = _run_gpu_wait(tmp_path, "0x10de", None)  # the driver never came up
    assert missing.returncode == 1 and "waiting for the NVIDIA driver (90/90)" in missing.stdout
    assert "NVIDIA driver 'none'" in missing.stdout
