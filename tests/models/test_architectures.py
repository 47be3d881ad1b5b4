"""kdlab.architectures computes what `kdlab check` validates against; the networks must agree."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kdlab.architectures import arch_names, feature_shapes, get_arch, layer_names
from kdlab.data.datasets import DATASETS
from kdlab.errors import ConfigError
from kdlab.models import MODELS, make_model, probe_shapes

from ..conftest import REPO_ROOT, tool_env


def test_every_model_has_computed_shapes():
    assert arch_names() == list(MODELS)


@pytest.mark.parametrize(
    ("dataset", "arch"),
    [(dataset, arch) for dataset in sorted(DATASETS) for arch in arch_names()
     if get_arch(arch).kind == DATASETS[dataset].kind],
)  # fmt: skip
def test_computed_shapes_are_the_networks_shapes(arch, dataset):
    spec = DATASETS[dataset]
    if spec.kind == "sequence":
        (frames, channels), num_classes = spec.sequence_shape, spec.num_classes
        model = make_model(arch, channels, num_classes, frames)
        computed = feature_shapes(arch, num_classes, spec.input_size)
        assert computed == probe_shapes(model, channels, frames)
        assert layer_names(computed) == tuple(model.hook_points())
        return
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


def test_a_model_of_the_other_data_kind_is_one_line():
    from kdlab.distill.spec import pair_shapes

    with pytest.raises(ConfigError, match=r"^teacher.arch spoter_small is a sequence model and "
                       r"digits is an image dataset: use one of resnet8, "):  # fmt: skip
        pair_shapes("digits", "spoter_small", "resnet8")
    with pytest.raises(ConfigError, match=r"^student.arch resnet8 is an image model and "
                       r"seq_motifs is a sequence dataset: use one of spoter, spoter_small, "
                       r"spoter_tiny$"):  # fmt: skip
        pair_shapes("seq_motifs", "spoter_small", "resnet8")
