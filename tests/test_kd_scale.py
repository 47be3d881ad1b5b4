"""Default KD weights keep every KD term within 0.1×–10× of cross-entropy at initialisation."""

from __future__ import annotations

import subprocess

import pytest

from kdlab.data.datasets import DATASETS
from kdlab.kd_scale import DEFAULT_PAIRS, kd_methods, measure_all

from .conftest import VENV_BIN, tool_env


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_default_weights_balance_kd_and_ce_on_every_pair(dataset):
    rows = measure_all([dataset], list(DEFAULT_PAIRS), batch=32)
    assert (
        {r.method for r in rows}
        == set(kd_methods())
        == {"at", "fitnets", "ft", "logit", "nst", "rkd"}
    )
    assert len(rows) == len(DEFAULT_PAIRS) * 6
    for row in rows:
        assert 0.1 <= row.ratio <= 10, row


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
    assert header == "| dataset | teacher → student | at | fitnets | ft | logit | nst | rkd |"
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:2] == ["digits", "resnet20 → resnet8"]
    assert all(0.1 <= float(c) <= 10 for c in cells[2:])


def test_kd_scale_rejects_an_unknown_dataset():
    proc = subprocess.run([str(VENV_BIN / "kdlab"), "kd-scale", "--datasets", "imagenet"],
                          capture_output=True, text=True, env=tool_env())  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "kdlab kd-scale: error: --datasets must be among digits, cifar10, cifar100, svhn, "
        "tinyimagenet, fashion_mnist, got 'imagenet'"
    )
