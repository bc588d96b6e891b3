"""What reads records and configs stays light: Ray workers and the CLI import it in every process."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["clara_ray", "clara_ray.data.records", "clara_ray.train.config",
                                    "clara_ray.ingest", "pipelines.cli"])
def test_module_does_not_import_the_model_stack(module):
    heavy = ("torch", "transformers", "peft")
    code = f"import sys, {module}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"importing {module} loads {done.stdout.strip()}"


def test_model_classes_still_import_from_the_package():
    import clara_ray
    from clara_ray import CLaRa, CLaRaConfig
    from clara_ray.model import CLaRa as ModelCLaRa

    assert CLaRa is ModelCLaRa and CLaRaConfig.__name__ == "CLaRaConfig"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        clara_ray.Nope
