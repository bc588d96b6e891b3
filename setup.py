"""Build hook (everything else is in pyproject.toml): the wheel carries the repository's configs,
examples and job specs under clara_ray/_shipped/, at their repository paths, so that documented
paths such as configs/train/cpu/compress_pretrain.yaml resolve after `pip install` anywhere
(clara_ray/resources.py looks there when a path does not exist where the user runs)."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ["configs", "examples", "experiments/configs", "serve/config.yaml", "cluster/jobs"]
WHEEL_COPY = Path("clara_ray") / "_shipped"  # clara_ray.resources.WHEEL_COPY


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads them from the checkout
            return
        for relative in SHIPPED:
            source, target = ROOT / relative, Path(self.build_lib) / WHEEL_COPY / relative
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)


setup(cmdclass={"build_py": BuildPyWithShipped})
