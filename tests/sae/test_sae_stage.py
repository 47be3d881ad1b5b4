"""The SAE stages in a real DVC repo: shards of the whole digits training split, SAEs per layer,
held-out metrics in `dvc exp show`, a refused layer that changes nothing, and a SIGKILLed
train_sae whose rerun ends with the uninterrupted run's bytes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kdlab.extract.shards import ShardSet, read_layer_list
from kdlab.sae.train import load_sae

from ..conftest import run, tool_env
from ..repos import dvc, make_clone

pytestmark = pytest.mark.integration

SAE = ["shards.layers=[embedding,stage3]", "shards.shard_rows=2000", "sae.expansion=4",
       "sae.epochs=3", "sae.batch_size=256", "sae.lr=0.003", "sae.lr_warmup=10",
       "sae.checkpoint_every=5", "sae.norm_samples=2000", "sae.init_samples=1000"]  # fmt: skip


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = make_clone(tmp_path_factory.mktemp("sae"))
    sets = [arg for s in SAE for arg in ("-S", s)]
    out = dvc(repo, "exp", "run", "-n", "sae-digits", *sets)
    for stage in ("shards", "train_sae"):
        assert f"Running stage '{stage}'" in out, out
    return repo


def test_saes_from_every_sample_of_the_training_split(repo):
    meta = json.loads((repo / "data/digits/meta.json").read_text())
    n_train = meta["splits"]["train"]
    assert read_layer_list(repo / "data/shards") == ["embedding", "stage3"]
    embedding = ShardSet(repo / "data/shards/embedding")
    stage3 = ShardSet(repo / "data/shards/stage3")
    assert embedding.rows == n_train and embedding.meta["tokens_per_sample"] == 1
    tokens = stage3.meta["tokens_per_sample"]  # resnet8 on 8x8 digits: a 2x2 map
    assert tokens == 4 and stage3.rows == 4 * n_train and stage3.n_shards == 3
    assert embedding.meta["model"]["sha256"] == digest(repo / "models/teacher/model.pt")
    metrics = json.loads((repo / "metrics/sae/metrics.json").read_text())
    assert sorted(metrics) == ["embedding", "stage3"]
    for layer, shards in (("embedding", embedding), ("stage3", stage3)):
        held = metrics[layer]["heldout"]
        assert 0 < held["fve"] <= 1 and held["fve"] == pytest.approx(1 - held["nmse"])
        assert held["rows"] == pytest.approx(0.1 * shards.rows, rel=0.05)
        *_, payload = load_sae(repo / f"models/sae/{layer}.pt")
        assert payload["d_latent"] == 4 * shards.d and payload["shards_sha256"] == \
            shards.meta["metadata_sha256"]  # fmt: skip
        table = (repo / f"models/sae/{layer}.topk.csv").read_text().splitlines()
        assert table[0] == "latent,rank,sample,token,value" and len(table) > 1
        pairs = [tuple(line.split(",")[::2][:2]) for line in table[1:]]  # (latent, sample)
        assert len(pairs) == len(set(pairs))  # no sample twice for a latent
        assert max(int(line.split(",")[1]) for line in table[1:]) == 15  # sae.top_k: 16
    curve = repo / "models/sae/curves/embedding/plots/metrics/train/loss.tsv"
    assert curve.read_text().splitlines()[0] == "step\tloss"
    rows = json.loads(dvc(repo, "exp", "show", "--json"))
    shown = json.dumps(rows)
    assert '"fve"' in shown and "metrics/sae/metrics.json" in shown


def test_a_layer_the_model_lacks_is_refused_before_anything_changes(repo):
    before = {p: digest(p) for p in sorted((repo / "data").rglob("*")) if p.is_file()}
    before |= {p: digest(p) for p in sorted((repo / "models").rglob("*")) if p.is_file()}
    params = (repo / "params.yaml").read_bytes()
    proc = run(["dvc", "exp", "run", "-S", "shards.layers=[stage9]"], cwd=repo, check=False)
    said = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0
    assert "shards.layers[0] must be a layer of the teacher (resnet8)" in said, said
    assert (repo / "params.yaml").read_bytes() == params
    after = {p: digest(p) for p in before if p.exists()}
    assert after == before


def test_a_killed_train_sae_resumes_to_the_same_bytes(repo, tmp_path):
    def command(out):
        return [sys.executable, "-m", "kdlab.stages.train_sae", "--shards", "data/shards",
                "--out", str(out / "sae"), "--metrics", str(out / "metrics.json"),
                "--resume", str(out / "resume")]  # fmt: skip

    env = {**tool_env(), "PYTHONPATH": "src"}
    whole = tmp_path / "whole"
    subprocess.run(command(whole), cwd=repo, env=env, check=True, capture_output=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while not (killed / "resume" / "embedding.pt").exists():  # the first checkpoint is written
        assert time.time() < deadline and proc.poll() is None, "no checkpoint before the end"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "sae").exists()  # nothing half-written
    again = subprocess.run(command(killed), cwd=repo, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "resuming SAE training at step" in again.stderr, again.stderr
    for rel in ("sae/embedding.pt", "sae/stage3.pt", "metrics.json"):
        assert digest(killed / rel) == digest(whole / rel), rel
    assert digest(whole / "sae/embedding.pt") == digest(repo / "models/sae/embedding.pt")
    assert not list((killed / "resume").iterdir())  # removed once the outputs are complete
