"""`kdlab bench --suite real`: both loops train on real Fashion-MNIST until the target, the clock
stops at the first epoch that reaches it, and the table and JSON say so; bad options are one
line."""

from __future__ import annotations

import json

import pytest

from kdlab.bench import realdata
from kdlab.cli import main
from kdlab.data.datasets.fashion_mnist import FASHION_MNIST_DEBIAN_DIR
from kdlab.training.seeding import resolve_device

from ..services import unavailable


@pytest.fixture(autouse=True)
def fashion_mnist():
    if not FASHION_MNIST_DEBIAN_DIR.is_dir():
        unavailable("Fashion-MNIST", f"{FASHION_MNIST_DEBIAN_DIR} is missing "
                    "(apt-get install dataset-fashion-mnist)")  # fmt: skip


def test_both_loops_reach_a_reachable_target():
    cfg = realdata.RealConfig(train_subset=500, target_acc=0.2, max_epochs=3)
    result = realdata.run_real_benchmark(cfg, resolve_device("cpu"), None)
    assert result["train_images"] == 500 and result["test_images"] == 10_000
    for loop in result["loops"]:
        # the clock stops at the first epoch at or above the target, and not before
        epoch = loop["epochs_to_target"]
        assert epoch is not None and loop["accuracies"][epoch - 1] >= 0.2
        assert all(acc < 0.2 for acc in loop["accuracies"][: epoch - 1])
        assert loop["seconds_to_target"] == loop["seconds"][epoch - 1] > 0
    kdlab, reference = result["loops"]
    assert result["reference_over_kdlab"] == pytest.approx(
        reference["seconds_to_target"] / kdlab["seconds_to_target"])  # fmt: skip
    table = realdata.format_real_table(result)
    assert "| kdlab | " in table and "| reference | " in table and "reference / kdlab" in table


def test_unreached_target_is_said(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--suite", "real", "--train-subset", "200", "--max-epochs", "1",
            "--target-acc", "0.99", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("| not reached | – |") == 2 and "seconds to target: –" in printed
    assert "| kdlab | not reached | – |" in out.with_suffix(".md").read_text()
    loops = json.loads(out.read_text())["real"]["loops"]
    assert [len(loop["accuracies"]) for loop in loops] == [1, 1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--target-acc", "1.5"], "--target-acc must be in (0, 1), got 1.5"),
     (["--max-epochs", "0"], "--max-epochs must be at least 1, got 0")],
)  # fmt: skip
def test_bad_options_are_one_line(tmp_path, capsys, argv, message):
    assert main(["bench", "--suite", "real", *argv, "--json", str(tmp_path / "b.json")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"kdlab bench: error: {message}"]
    assert not (tmp_path / "b.json").exists()
