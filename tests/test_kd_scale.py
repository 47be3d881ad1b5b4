"""Default KD weights keep every KD term within 0.1×–10× of cross-entropy at initialisation."""

from __future__ import annotations

import subprocess

import pytest

from kdlab.data.datasets import DATASETS
from kdlab.distill.specs import load_specs
from kdlab.kd_scale import DEFAULT_PAIRS, kd_methods, measure_all

from .conftest import REPO_ROOT, VENV_BIN, tool_env

LOGITS_ONLY = {"logit", "dkd"}
"""Methods that read only the logits: a freshly initialised ViT's are all zero (its classifier
is zero-initialised), so their term is exactly 0 there and the window is checked on ResNets."""


def readme_ratios() -> dict[tuple[str, str, str], float]:
    """The README's kd-scale table: (dataset, 'teacher → student', method) -> ratio."""
    lines = [line for line in (REPO_ROOT / "README.md").read_text().splitlines()
             if line.startswith("| ")]  # fmt: skip
    header = next(line for line in lines if line.startswith("| dataset | teacher → student |"))
    methods = [c.strip() for c in header.strip("|").split("|")][2:]
    start = lines.index(header) + 1
    table = {}
    for line in lines[start:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] not in DATASETS:
            break
        table |= {(cells[0], cells[1], m): float(v)
                  for m, v in zip(methods, cells[2:], strict=True) if v != "–"}  # fmt: skip
    return table


@pytest.mark.parametrize("dataset", sorted(n for n, s in DATASETS.items() if s.kind == "image"))
def test_default_weights_balance_kd_and_ce_on_every_pair_as_the_readme_says(dataset):
    rows = measure_all([dataset], list(DEFAULT_PAIRS))  # the command's batch of 64
    methods = kd_methods()
    assert {r.method for r in rows} == set(methods) == set(load_specs()) - {"none"}
    served = {pair: set() for pair in DEFAULT_PAIRS}
    for row in rows:
        served[row.teacher, row.student].add(row.method)
    assert served["resnet20", "resnet8"] == set(methods) - {"minilm"}  # no attention in ResNets
    assert {"logit", "rkd", "minilm"} <= served["vit_small", "vit_tiny"]
    assert not {"at", "fitnets", "nst", "ft"} & served["vit_small", "vit_tiny"]  # feature maps
    readme = readme_ratios()
    for row in rows:
        if row.teacher.startswith("vit") and row.method in LOGITS_ONLY:
            assert row.ratio == 0.0, row  # torchvision starts a ViT's classifier at zero
        else:
            assert 0.1 <= row.ratio <= 10, row
        stated = readme[dataset, f"{row.teacher} → {row.student}", row.method]
        assert row.ratio == pytest.approx(stated, abs=0.02), row


def test_kd_scale_command_prints_a_table():
    cmd = [
        str(VENV_BIN / "kdlab"),
        "kd-scale",
        "--datasets",
        "digits",
        "--pairs",
        "resnet20:resnet8",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=tool_env())
    assert proc.returncode == 0, proc.stderr
    header, _rule, row = proc.stdout.strip().splitlines()
    served = [m for m in kd_methods() if m != "minilm"]  # ResNets have no attention to distil
    assert header == "| dataset | teacher → student | " + " | ".join(served) + " |"
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["digits", "resnet20 → resnet8"]
    assert len(cells) == 2 + len(served) and all(0.1 <= float(c) <= 10 for c in cells[2:])


def test_kd_scale_rejects_an_unknown_dataset():
    proc = subprocess.run([str(VENV_BIN / "kdlab"), "kd-scale", "--datasets", "imagenet"],
                          capture_output=True, text=True, env=tool_env())  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"kdlab kd-scale: error: --datasets must be among {', '.join(DATASETS)}, got 'imagenet'"
    )
