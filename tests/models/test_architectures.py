"""kdlab.architectures computes what `kdlab check` validates against; the networks must agree."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdlab.architectures import arch_names, feature_shapes, layer_names
from kdlab.data.datasets import DATASETS
from kdlab.errors import ConfigError
from kdlab.models import MODELS, make_model, probe_shapes

from ..conftest import REPO_ROOT, tool_env


def test_every_model_has_computed_shapes():
    assert arch_names() == list(MODELS)


@pytest.mark.parametrize("arch", arch_names())
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_computed_shapes_are_the_networks_shapes(arch, dataset):
    spec = DATASETS[dataset]
    height, width, channels = spec.image_shape
    try:
        model = make_model(arch, channels, spec.num_classes, height)
    except ValueError:  # a ViT whose patch size does not divide the image
        with pytest.raises(ConfigError, match="multiple of its patch size"):
            feature_shapes(arch, spec.num_classes, height)
        return
    computed = feature_shapes(arch, spec.num_classes, height)
    assert computed == probe_shapes(model, channels, height, width)
    assert layer_names(computed) == tuple(model.hook_points())


def test_unknown_arch_is_one_line():
    with pytest.raises(
        ConfigError, match=rf"^arch must be one of {', '.join(arch_names())}, got 'vgg'$"
    ):
        feature_shapes("vgg", 10, 32)


def test_kdlab_check_never_imports_torch():
    """Validation works on computed shapes and the methods' specs: torch (1.2 s to import on
    2 cores) is not loaded by `kdlab check`, nor by a grid's validation."""
    code = ("import sys\nfrom kdlab.cli import main\nassert main(['check']) == 0\n"
            "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=tool_env(),
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
