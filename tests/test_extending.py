"""One registry mechanism: a throwaway KD method, architecture, dataset and analysis measure,
each added as its own files (nothing else edited), flow through `kdlab check`, every DVC stage
and `kdlab report`, as docs/EXTENDING.md says."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import yaml

from kdlab.codedeps import compact_deps, stage_modules

from .conftest import VENV_BIN, run, tiny_params, write_params
from .repos import TINY, dvc, git, make_clone

THROWAWAY = {
    # A KD method: its params and the pairs it serves (torch-free), and its loss.
    "src/kdlab/distill/specs/logit_mse.py": """
        import dataclasses

        from kdlab.distill.spec import register_spec
        from kdlab.schema import check_range


        @dataclasses.dataclass(frozen=True)
        class LogitMSEParams:
            weight: float = 1.0

            def validate(self, path):
                check_range(f"{path}.weight", self.weight, 0, 100)


        register_spec("logit_mse", LogitMSEParams)
    """,
    "src/kdlab/distill/logit_mse.py": """
        import torch.nn.functional as F

        from kdlab.distill.base import Distiller, register
        from kdlab.distill.specs.logit_mse import LogitMSEParams


        @register("logit_mse", LogitMSEParams)
        class LogitMSE(Distiller):
            def loss(self, student, teacher, batch):
                return F.mse_loss(student.logits.float(), teacher.logits.float())
    """,
    # An architecture: names and computed shapes (torch-free), and the network.
    "src/kdlab/architectures/mlp.py": """
        from kdlab.architectures import ShapeInfo, register_arch


        def mlp_shapes(config, num_classes, image_size):
            return ShapeInfo({"hidden": (config["width"],)}, config["width"], num_classes)


        register_arch("mlp_tiny", "mlp", {"width": 32}, mlp_shapes)
    """,
    "src/kdlab/models/mlp.py": """
        from torch import nn

        from kdlab.models import register_family
        from kdlab.models.base import FeatureModel, Features


        @register_family("mlp")
        class MLP(FeatureModel):
            stage_names = ("hidden",)

            def __init__(self, width, in_channels=3, num_classes=10, image_size=32):
                super().__init__()
                pixels = in_channels * image_size * image_size
                self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(pixels, width), nn.ReLU())
                self.fc = nn.Linear(width, num_classes)

            def embedding_hook(self):
                return self.hidden, lambda h: h

            def forward_features(self, x):
                h = self.hidden(x)
                return Features({"hidden": h}, h, self.fc(h))
    """,
    # A dataset: its builder and spec (here generated, no download).
    "src/kdlab/data/datasets/blobs.py": """
        import numpy as np

        from kdlab.data.datasets import Arrays, DatasetSpec, register_dataset


        def build_blobs(ctx):
            rng = np.random.default_rng(0)
            labels = rng.integers(0, 4, 600)
            centres = rng.integers(40, 215, (4, 6, 6, 1))
            noise = rng.normal(0, 25, (600, 6, 6, 1))
            images = np.clip(centres[labels] + noise, 0, 255).astype(np.uint8)
            labels = labels.astype(np.int64)
            return Arrays(images[:500], labels[:500], images[500:], labels[500:],
                          ("a", "b", "c", "d"))


        register_dataset(DatasetSpec("blobs", image_shape=(6, 6, 1), num_classes=4,
                                     train_size=500, build=build_blobs, crop_padding=0,
                                     horizontal_flip=False))
    """,
    # An analysis measure: one scalar per layer and network.
    "src/kdlab/analysis/measures/mean_norm.py": """
        from kdlab.analysis.measures import Inputs, Output, register_measure


        @register_measure("mean_norm", "layer")
        def mean_norm(inputs: Inputs, role: str, layer: str) -> Output:
            x = inputs.acts[role, layer]
            return Output({f"mean_norm/{role}/{layer}": x.flatten(1).norm(dim=1).mean().item()})
    """,
}


def kdlab(repo, *args, check=True):
    """The clone's own kdlab (its src/, with the new files), as its DVC stages run it."""
    return run([str(VENV_BIN / "python"), "-m", "kdlab", *args], cwd=repo, check=check,
               env_extra={"PYTHONPATH": str(repo / "src")})  # fmt: skip


def test_a_new_method_architecture_dataset_and_measure_flow_through_everything(tmp_path):
    params = tiny_params(**{**TINY, **{
        "data.name": "blobs", "teacher.arch": "mlp_tiny", "student.arch": "mlp_tiny",
        "kd.method": "logit_mse", "analyze.sae_layers": ["hidden"], "extract.attention": False,
        "teacher.epochs": 3, "teacher.save_epochs": [1], "teacher.lr": 0.05,
        "student.lr": 0.05, "grid.datasets": ["blobs"], "grid.methods": ["logit_mse"],
        "grid.alphas": [0.5], "grid.seeds": [0],
    }})  # fmt: skip
    params["kd"]["logit_mse"] = {"weight": 1.0}  # its params section, as for every method
    repo = make_clone(tmp_path, params)
    for rel, text in THROWAWAY.items():
        (repo / rel).write_text(textwrap.dedent(text).lstrip())
    assert not git(repo, "status", "--porcelain", "--", "dvc.yaml", "src/kdlab/config.py")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a throwaway entry of every registry")

    # kdlab check knows all four, and refuses a bad value of the new method in one line.
    assert kdlab(repo, "check").returncode == 0
    bad = tiny_params(**{"kd.method": "logit_mse"})
    bad["kd"]["logit_mse"] = {"weight": -1}
    write_params(tmp_path / "bad.yaml", bad)
    refused = kdlab(repo, "check", "--params", str(tmp_path / "bad.yaml"), check=False)
    assert refused.returncode != 0
    assert refused.stderr.strip().endswith("kd.logit_mse.weight must be in [0, 100], got -1.0")
    # dvc.yaml still declares each stage's import closure exactly: the stages depend on the new
    # files through the registries' packages, so DVC reruns what a change to them affects.
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    for stage, module in stage_modules(repo / "dvc.yaml").items():
        declared = [d for d in stages[stage]["deps"] if d.startswith("src/")]
        assert compact_deps(module, repo / "src") == declared, stage

    # Every stage: prepare (the new dataset), both trainings (the new network), the new KD
    # method, extract and analyze (the new measure).
    out = dvc(repo, "exp", "run", "-n", "throwaway-mse")
    for stage in ("prepare", "train_teacher", "train_student", "extract", "analyze"):
        assert f"Running stage '{stage}'" in out, (stage, out)
    dvc(repo, "exp", "run", "-n", "throwaway-none", "-S", "kd.method=none")
    rows = {e["name"]: e for c in json.loads(dvc(repo, "exp", "show", "--json"))
            for e in (c.get("experiments") or [])}  # fmt: skip
    show = json.loads(kdlab(repo, "show", "--json").stdout)
    mse = next(r for r in show if r["name"] == "throwaway-mse")
    assert mse["method"] == "logit_mse" and mse["dataset"] == "blobs" and mse["student_acc"] > 0.5
    assert "throwaway-mse" in rows

    # The report: the new measure is a column of every run and can be the alignment axis.
    report = kdlab(repo, "report", "--only", "throwaway-*", "--alignment",
                   "mean_norm/student/hidden")  # fmt: skip
    assert report.returncode == 0, report.stderr
    runs = pd.read_csv(repo / "plots/report/runs.csv")
    assert set(runs["method"]) == {"logit_mse", "none"}
    assert (runs["mean_norm/student/hidden"] > 0).all()
    assert (repo / "plots/report/acc_vs_alignment.png").read_bytes().startswith(b"\x89PNG")
