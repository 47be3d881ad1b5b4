"""Refuse before anything is removed: `dvc repro` and `dvc exp run -S` with invalid params stop
at the `check` stage, and every output and tracked file stays exactly as it was."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlab.distill.registry import params_from_dict
from kdlab.schema import load_yaml

from .conftest import run, tiny_params, tool_env, write_params
from .repos import TINY, dvc, git, make_clone, restore_tracked
from .services import unavailable

pytestmark = pytest.mark.integration

OUTPUT_DIRS = ("data", "models", "metrics", "plots")

INVALID = {
    "kd.alpha": 1.5,
    "teacher.lr": float("nan"),  # written as .nan: NaN passes every comparison with a bound
    "kd.logit.temperature": float("inf"),
    "slurm.partition": "bad partition;rm -rf",
    "student.arch": "resnet9",
    "kd.logit.bogus": 1,
    "extract.layers": ["stage9"],
    "analyze.sae_layers": ["stage9"],
    "kd.fitnets.hint_layer": "stage4",
    "teacher.batch_size": 0,
}
if not torch.cuda.is_available():
    INVALID["device"] = "cuda"


def outputs(repo: Path) -> dict[str, bytes]:
    """Every output and dvc.lock, by content (git's stat cache can miss a same-size edit)."""
    files = [p for d in OUTPUT_DIRS for p in sorted((repo / d).rglob("*")) if p.is_file()]
    found = {p.relative_to(repo).as_posix(): p.read_bytes() for p in files}
    return {**found, "dvc.lock": (repo / "dvc.lock").read_bytes()}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    clone = make_clone(tmp_path_factory.mktemp("refuse"))
    dvc(clone, "repro")
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "good results")
    return clone


# DVC without kdlab's guard (kdlab.dvcguard runs only for a `dvc` command): what a user has who
# installed kdlab without `make install`. The `check` stage must refuse alone then.
UNGUARDED_DVC = [
    sys.executable,
    "-c",
    "import sys; from dvc.cli import main; sys.exit(main(sys.argv[1:]))",
]
SAID = r"kdlab(?: check)?: error: "
"""The guard's line or, without it, the check stage's."""


def assert_untouched(repo: Path, before: dict[str, bytes], out: str, said: str = SAID) -> None:
    assert re.search(said, out), out
    assert "Running stage 'train_" not in out and "Running stage 'extract'" not in out, out
    changed = git(repo, "status", "--porcelain").splitlines()
    assert changed in ([], [" M params.yaml"]), changed  # the edit itself, nothing else
    after = outputs(repo)
    assert sorted(after) == sorted(before), "an output file appeared or disappeared"
    assert [name for name in before if after[name] != before[name]] == []
    restore_tracked(repo)


@pytest.mark.parametrize("guarded", [True, False], ids=["guard", "check-stage-alone"])
@pytest.mark.parametrize("key", sorted(INVALID))
def test_invalid_params_then_dvc_repro_leaves_everything(repo, key, guarded):
    before = outputs(repo)
    write_params(repo / "params.yaml", tiny_params(**TINY, **{key: INVALID[key]}))
    proc = run(["dvc", "repro"] if guarded else [*UNGUARDED_DVC, "repro"], cwd=repo, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    # the guard says it first; the device (which needs torch) is the check stage's
    said = (
        SAID
        if guarded and key == "device"
        else "kdlab: error: "
        if guarded
        else "kdlab check: error: "
    )
    assert_untouched(repo, before, out, said=said)


@pytest.mark.parametrize("settings", [["kd.alpha=1.5"], ["extract.layers=[stage9]"],
                                      ["analyze.sae_layers=[stage9]"], ["kd.alpha=nan"],
                                      ["kd.alpha=.nan"], ["teacher.lr=nan"], ["student.lr=-.inf"],
                                      ["kd.method=at", "kd.at.stages=[]"],
                                      ["slurm.partition='bad partition;rm -rf'"],
                                      ["data.jitter=0.1"], ["teacher.arch=spoter_small"],
                                      ["student.arch=none", "kd.method=ft"],
                                      ["data.name=seq_motifs", "teacher.arch=spoter_small",
                                       "student.arch=none", "analyze.case_studies=[nope]"],
                                      ["data.name=seq_motifs", "data.crop_padding=2",
                                       "teacher.arch=spoter_small",
                                       "student.arch=none"],
                                      ["teacher.size.depth=32"],
                                      ["data.name=seq_motifs", "teacher.arch=spoter_small",
                                       "student.arch=none", "teacher.size.heads=5"]])  # fmt: skip
def test_invalid_exp_run_set_param_leaves_everything(repo, settings):
    before = outputs(repo)
    sets = [arg for setting in settings for arg in ("-S", setting)]
    proc = run(["dvc", "exp", "run", *sets], cwd=repo, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert git(repo, "status", "--porcelain") == "", "params.yaml was rewritten"  # the guard
    assert_untouched(repo, before, out, said=r"kdlab: error: -S ")


def test_dvc_of_an_environment_that_is_not_activated_is_one_line(repo, bare_python):
    """`.venv/bin/dvc repro` without `source .venv/bin/activate`: DVC runs the stages with the
    `python` first on PATH, here one with nothing but the standard library."""
    before = outputs(repo)
    write_params(repo / "params.yaml", tiny_params(**TINY, **{"kd.alpha": 0.7}))
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)  # as `make install` leaves it
    path = f"{bare_python.parent}{os.pathsep}{os.environ['PATH']}"
    try:
        proc = run([".venv/bin/dvc", "repro"], cwd=repo, check=False, env_extra={"PATH": path})
    finally:
        (repo / ".venv").unlink()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out, out
    said = (
        f"kdlab: {bare_python} is not the "
        "project's environment (no module PIL, dvc, dvclive and 8 more): run "
        "`source .venv/bin/activate` and run the command again"
    )
    assert_untouched(repo, before, out, said=re.escape(said))


def test_a_missing_section_is_kdlabs_line_not_dvcs_after_deleting(repo):
    """DVC would run the stages whose params it cannot find, then fail with "Parameters ... are
    missing" after deleting their outputs; the preflight names the key first."""
    before = outputs(repo)
    params = tiny_params(**TINY)
    del params["kd"]
    write_params(repo / "params.yaml", params)
    proc = run(["dvc", "repro"], cwd=repo, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "are missing" not in out, out
    assert re.search(
        rf"{SAID}params.yaml has no kd.method, which stage train_paraphraser of dvc.yaml reads",
        out,
    ), out
    assert_untouched(repo, before, out)


def assert_refused_first(repo: Path, before: dict, proc, dvcs_words: str, kdlab_line: str):
    """Refused by kdlab's check line (a regex), not by DVC's `dvcs_words`, nothing changed."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and dvcs_words not in out, out
    assert re.search(rf"{SAID}(?:params.yaml: )?{kdlab_line}", out), out
    assert_untouched(repo, before, out)


@contextlib.contextmanager
def read_only(path: Path):
    """`path` read-only for this process: a read-only bind mount as root (whom permissions do
    not stop), else the permission bits."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
        if mounted.returncode != 0:
            unavailable("read-only mount", mounted.stderr.decode().strip())
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
            yield
        finally:
            subprocess.run(["umount", str(path)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")] if p.is_dir()}
        for p in modes:
            p.chmod(0o555)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


@pytest.mark.parametrize("where", ["models", "metrics/student", "plots/figures", "checkpoints"])
def test_a_read_only_output_directory_is_refused_before_anything_is_removed(repo, where):
    before = outputs(repo)
    write_params(repo / "params.yaml", tiny_params(**TINY, **{"kd.alpha": 0.7}))
    created = not (repo / where).exists()
    try:
        with read_only(repo / where):
            proc = run(["dvc", "repro"], cwd=repo, check=False)
    finally:
        if created:
            (repo / where).rmdir()
    assert_refused_first(repo, before, proc, "Permission denied",
                         rf"cannot write {where}\S* \(for \S+\): (read-only file system|"
                         r"permission denied); nothing was removed")  # fmt: skip


def test_a_full_disk_is_refused_before_anything_is_removed(repo):
    """The outputs' file system has too little room for the estimate (models/ on a tmpfs of its
    outputs' size plus 64 KiB): one line naming it, not DVC's "unexpected error" after deleting."""
    if os.geteuid() != 0:
        unavailable("small tmpfs", "mounting a tmpfs needs root")
    before = outputs(repo)
    write_params(repo / "params.yaml", tiny_params(**TINY, **{"kd.alpha": 0.7}))
    saved = repo.parent / "models-saved"
    shutil.copytree(repo / "models", saved)
    room = sum(p.stat().st_size for p in saved.rglob("*") if p.is_file()) + (64 << 10)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room}", "tmpfs",
                              str(repo / "models")], capture_output=True)  # fmt: skip
    if mounted.returncode != 0:
        shutil.rmtree(saved)
        unavailable("small tmpfs", mounted.stderr.decode().strip())
    try:
        shutil.copytree(saved, repo / "models", dirs_exist_ok=True)  # the outputs, 64 KiB spare
        proc = run(["dvc", "repro"], cwd=repo, check=False)
    finally:
        subprocess.run(["umount", str(repo / "models")], check=True)
        shutil.rmtree(saved)
    assert_refused_first(repo, before, proc, "unexpected error",
                         r"not enough disk space for this run on models\S*: [0-9.]+ MiB free, "
                         r"the run writes about [0-9.]+ MiB there")  # fmt: skip


def test_two_exp_runs_in_one_workspace_never_mix_params(repo):
    """`dvc exp run -S kd.alpha=0.6 &` then `dvc exp run -S kd.alpha=0.7`: the second is refused
    by kdlab's DVC guard before DVC writes 0.7 into params.yaml (before: DVC rewrote it, then
    found its lock, and the first run trained on 0.7 under the name x06). The first run ends
    normally, and the params of its experiment commit are the ones its model was trained with
    (the checkpoint's metadata)."""
    committed = (repo / "params.yaml").read_bytes()
    first = subprocess.Popen(
        ["dvc", "exp", "run", "-n", "x06", "-S", "kd.alpha=0.6", "-S", "teacher.epochs=8",
         "-S", "teacher.lr=0.07"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, env=tool_env())  # fmt: skip
    lines = []
    for line in first.stdout:  # wait until the first run trains its teacher
        lines.append(line)
        if "Running stage 'train_teacher'" in line:
            break
    during = (repo / "params.yaml").read_bytes()
    second = run(["dvc", "exp", "run", "-n", "x07", "-S", "kd.alpha=0.7"], cwd=repo, check=False)
    assert (repo / "params.yaml").read_bytes() == during, "the refused run rewrote params.yaml"
    lines += first.stdout.readlines()
    first.wait(timeout=600)
    out = "".join(lines)
    try:
        said = (second.stdout + second.stderr).strip()
        assert second.returncode == 2, said
        assert said.startswith("kdlab: error: this workspace is busy: `dvc exp run -n x06 "), said
        assert first.returncode == 0, out
        refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps/")
        assert "/x06" in refs and "/x07" not in refs, refs
        ref = next(r for r in refs.split() if r.endswith("/x06"))
        recorded = load_yaml(git(repo, "show", f"{ref}:params.yaml"))
        assert recorded["kd"]["alpha"] == 0.6
        for role in ("teacher", "student"):  # what each network's checkpoint says it used
            trained = torch.load(repo / f"models/{role}/model.pt", map_location="cpu",
                                 weights_only=False)["params"]  # fmt: skip
            # The recorded params as a checkpoint states them (an image model's data section
            # without the sequence keys, a preset's role section without its empty size).
            stated = params_from_dict(recorded)
            for section, values in trained.items():  # (tuples in the checkpoint, lists in YAML)
                plain = json.loads(json.dumps(stated.section(section)))
                assert plain == json.loads(json.dumps(values)), (role, section)
        assert trained["kd"]["alpha"] == 0.6
    finally:
        (repo / "params.yaml").write_bytes(committed)
        restore_tracked(repo)
        dvc(repo, "checkout", "-f")


def test_an_unknown_dataset_removes_nothing(repo):
    """`dvc exp run -S data.name=mnist`: DVC's checkout would drop data/digits (no output of the
    new params) before the first stage runs; kdlab's DVC guard refuses the value first."""
    before = outputs(repo)
    proc = run(["dvc", "exp", "run", "-S", "data.name=mnist"], cwd=repo, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert out.strip() == (
        "kdlab: error: -S data.name=mnist: data.name must be one of basic_motions, cifar10, "
        "cifar100, digits, fashion_mnist, japanese_vowels, pickup_gesture_wiimote_z, seq_motifs, "
        "svhn, tinyimagenet, got 'mnist'; nothing was changed"
    ), out
    assert git(repo, "status", "--porcelain") == ""
    assert outputs(repo) == before
