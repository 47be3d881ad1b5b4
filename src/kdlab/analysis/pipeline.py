"""Every measure of one experiment, computed from its activation cache.

Metric keys are flat and readable, so `dvc exp show` is a usable table:
    cka/<layer>                       teacher vs student, same-named layers
    effdim/<role>/<layer>             participation ratio;  effdim_entropy/<role>/<layer>
    fisher/<role>/<layer>             trace(S_B) / trace(S_W) on the test labels
    ica/<layer>                       mean matched |corr| of FastICA components
    sae/<role>/<layer>/{r2,l0,dead_frac,dense_frac},  sae/<layer>/dict_match
    fidelity/{top1_agreement,kl_teacher_student}, calibration/ece/<role>   whole test split
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np
import torch

from kdlab.analysis.dimensionality import entropy_effective_rank, participation_ratio, pca_spectrum
from kdlab.analysis.fidelity import fidelity_metrics
from kdlab.analysis.ica import ica_match
from kdlab.analysis.sae import SAEConfig, dictionary_match, sae_stats, train_sae
from kdlab.analysis.separability import fisher_criterion
from kdlab.analysis.similarity import cka_from_grams, cka_matrix, gram_linear
from kdlab.config import AnalyzeConfig
from kdlab.errors import ConfigError
from kdlab.extract.activations import ActivationCache

log = logging.getLogger(__name__)
SPECTRUM_COMPONENTS = 64


@dataclasses.dataclass
class Analysis:
    metrics: dict[str, float]
    cka_teacher_layers: list[str]
    cka_student_layers: list[str]
    cka: list[list[float]]  # (teacher layers, student layers)
    spectra: dict[str, dict[str, list[float]]]  # layer -> role -> explained-variance ratios
    layer_rows: list[dict]  # one row per shared layer, for bar charts
    cka_by_epoch: list[dict]  # {"epoch": e, <layer>: cka, ...}, student milestones + final


def as_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float64)).to(device)


def as_samples(acts: torch.Tensor) -> torch.Tensor:
    """SAE inputs: every spatial position (N, C, H, W) or token (N, T, D) is one sample."""
    if acts.ndim == 4:
        return acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1])
    if acts.ndim == 3:
        return acts.reshape(-1, acts.shape[2])
    return acts.reshape(len(acts), -1)


def cka_over_training(cache: ActivationCache, layers: list[str], debiased: bool,
                      device: torch.device, final_epoch: int) -> list[dict]:  # fmt: skip
    """CKA of the final teacher with the student at each milestone (and at the end)."""
    rows = []
    grams_t = {
        layer: gram_linear(as_tensor(cache.get("teacher", layer), device)) for layer in layers
    }
    names = [m for m in cache.models() if re.fullmatch(r"student@epoch_\d+", m)] + ["student"]
    for name in names:
        epoch = int(name.split("_")[-1]) if "@" in name else final_epoch
        row = {"epoch": epoch}
        for layer in layers:
            gram_s = gram_linear(as_tensor(cache.get(name, layer), device))
            row[layer] = cka_from_grams(grams_t[layer], gram_s, debiased)
        rows.append(row)
    return sorted(rows, key=lambda r: r["epoch"])


def analyze_cache(cache: ActivationCache, cfg: AnalyzeConfig, seed: int,
                  device: torch.device) -> Analysis:  # fmt: skip
    t_layers, s_layers = cache.layers("teacher"), cache.layers("student")
    shared = [layer for layer in t_layers if layer in s_layers]
    roles = (("teacher", t_layers), ("student", s_layers))
    acts = {(role, layer): as_tensor(cache.get(role, layer), device)
            for role, layers in roles for layer in layers}  # fmt: skip
    labels = torch.from_numpy(cache.labels).to(device)
    metrics = fidelity_metrics(cache.test_logits("teacher"), cache.test_logits("student"),
                               cache.test_labels())  # fmt: skip
    log.info(
        "fidelity: top-1 agreement %.4f, KL(T‖S) %.4f",
        metrics["fidelity/top1_agreement"],
        metrics["fidelity/kl_teacher_student"],
    )

    log.info("CKA: %d teacher × %d student layers", len(t_layers), len(s_layers))
    t_names, s_names, matrix = cka_matrix(
        {layer: acts["teacher", layer] for layer in t_layers},
        {layer: acts["student", layer] for layer in s_layers}, debiased=cfg.debiased_cka,
    )  # fmt: skip
    for layer in shared:
        metrics[f"cka/{layer}"] = matrix[t_names.index(layer)][s_names.index(layer)]

    spectra: dict[str, dict[str, list[float]]] = {}
    for (role, layer), x in acts.items():
        spectrum = pca_spectrum(x)
        metrics[f"effdim/{role}/{layer}"] = participation_ratio(spectrum)
        metrics[f"effdim_entropy/{role}/{layer}"] = entropy_effective_rank(spectrum)
        metrics[f"fisher/{role}/{layer}"] = fisher_criterion(x, labels)
        ratios = (spectrum / spectrum.sum())[:SPECTRUM_COMPONENTS]
        spectra.setdefault(layer, {})[role] = ratios.tolist()

    for layer in shared:
        log.info("ICA on %s (%d components)", layer, cfg.ica_components)
        metrics[f"ica/{layer}"] = ica_match(
            acts["teacher", layer].cpu().numpy(), acts["student", layer].cpu().numpy(),
            cfg.ica_components, seed,
        )  # fmt: skip

    sae_cfg = SAEConfig(expansion=cfg.sae_expansion, l1=cfg.sae_l1, epochs=cfg.sae_epochs,
                        batch_size=cfg.sae_batch_size)  # fmt: skip
    for layer in cfg.sae_layers:
        if layer not in shared:  # kdlab check refuses this first; never drop metrics silently
            raise ConfigError(
                f"analyze.sae_layers names {layer!r}, which is not an extracted layer of both "
                f"networks; one of {', '.join(shared)}"
            )
        codes = {}
        for role in ("teacher", "student"):
            samples = as_samples(acts[role, layer]).float()
            log.info("SAE on %s/%s: %d samples × %d dims", role, layer, *samples.shape)
            sae, scale = train_sae(samples, sae_cfg, seed)
            stats, codes[role] = sae_stats(sae, samples, scale, sae_cfg.dense_threshold)
            metrics.update({f"sae/{role}/{layer}/{k}": v for k, v in stats.items()})
        if len(codes["teacher"]) == len(codes["student"]):
            metrics[f"sae/{layer}/dict_match"] = dictionary_match(
                codes["teacher"], codes["student"]
            )

    layer_rows = [
        {"layer": layer, "cka": metrics[f"cka/{layer}"],
         **{f"{m}_{r}": metrics[f"{m}/{r}/{layer}"] for m in ("effdim", "fisher")
            for r in ("teacher", "student")}}
        for layer in shared
    ]  # fmt: skip
    final_epoch = int(cache.meta["models"]["student"].get("epoch", 0))
    by_epoch = cka_over_training(cache, shared, cfg.debiased_cka, device, final_epoch)
    return Analysis(metrics, t_names, s_names, matrix, spectra, layer_rows, by_epoch)
