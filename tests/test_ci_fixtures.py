"""Tests on trained artefacts that CI pulls from the fixtures remote instead of retraining."""

from __future__ import annotations

import pytest
import torch

from kdlab.checksum import sha256_file
from kdlab.config import AnalyzeConfig
from kdlab.data.loader import BatchLoader, load_dataset

pytestmark = pytest.mark.integration


def test_pulled_teacher_is_trained(ci_fixtures, digits_dir):
    from kdlab.training.loop import evaluate
    from kdlab.training.run import load_model

    model, payload = load_model(ci_fixtures / "digits-teacher/model.pt", torch.device("cpu"))
    assert payload["arch"] == "resnet20" and payload["role"] == "teacher"
    data = load_dataset(digits_dir)
    test = BatchLoader(data.test, 512, data.meta["mean"], data.meta["std"], train=False)
    result = evaluate(model, test, torch.device("cpu"))
    assert result["acc"] >= 0.95  # chance is 0.1
    assert result["acc"] == pytest.approx(payload["metrics"]["test/acc"], abs=1e-6)


def test_pulled_activations_belong_to_the_pulled_teacher_and_analyse(ci_fixtures):
    from kdlab.analysis.measures import analyze_cache
    from kdlab.extract.activations import ActivationCache

    cache = ActivationCache(ci_fixtures / "digits-activations")
    teacher = ci_fixtures / "digits-teacher/model.pt"
    assert cache.meta["models"]["teacher"]["sha256"] == sha256_file(teacher)
    cfg = AnalyzeConfig(sae_epochs=3, ica_components=4)
    result = analyze_cache(cache, cfg, seed=0, device=torch.device("cpu"))
    cka = torch.tensor([row["cka"] for row in result.plots["cka_matrix"]])
    assert cka.shape == (16,) and ((cka >= 0) & (cka <= 1 + 1e-5)).all()
    # a trained pair (both ~99 % on digits) agrees far more on the same images than when the
    # student's rows are shuffled, which breaks the image correspondence
    from .analysis.reference import linear_cka

    t = torch.from_numpy(cache.get("teacher", "embedding").astype("float32"))
    s = torch.from_numpy(cache.get("student", "embedding").astype("float32"))
    shuffled = s[torch.randperm(len(s), generator=torch.Generator().manual_seed(0))]
    assert result.metrics["cka/embedding"] == pytest.approx(linear_cka(t, s), abs=1e-4)
    assert result.metrics["cka/embedding"] > 0.7 > 2 * linear_cka(t, shuffled)
