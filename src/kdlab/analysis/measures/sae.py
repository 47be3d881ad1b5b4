"""Sparse autoencoders on `analyze.sae_layers` (kdlab.analysis.sae), one per network:
sae/<role>/<layer>/{r2,l0,dead_frac,dense_frac} and sae/<layer>/dict_match, how well the
student's dictionary matches the teacher's."""

from __future__ import annotations

import logging

import torch

from kdlab.analysis.measures import Inputs, Output, register_measure
from kdlab.analysis.sae import SAEConfig, dictionary_match, sae_stats, train_sae
from kdlab.errors import ConfigError

log = logging.getLogger(__name__)


def as_samples(acts: torch.Tensor) -> torch.Tensor:
    """SAE inputs: every spatial position (N, C, H, W) or token (N, T, D) is one sample."""
    if acts.ndim == 4:
        return acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1])
    if acts.ndim == 3:
        return acts.reshape(-1, acts.shape[2])
    return acts.reshape(len(acts), -1)


@register_measure("sae", "run")
def sae(inputs: Inputs) -> Output:
    cfg = inputs.cfg
    sae_cfg = SAEConfig(expansion=cfg.sae_expansion, l1=cfg.sae_l1, epochs=cfg.sae_epochs,
                        batch_size=cfg.sae_batch_size)  # fmt: skip
    metrics = {}
    # Both networks, or the one model of a study without a student.
    roles = [role for role in ("teacher", "student") if inputs.layers(role)]
    valid = inputs.shared if len(roles) == 2 else inputs.layers("teacher")
    for layer in cfg.sae_layers:
        if layer not in valid:  # kdlab check refuses this first; never drop it silently
            raise ConfigError(
                f"analyze.sae_layers names {layer!r}, which is not an extracted layer of "
                f"{'both networks' if len(roles) == 2 else 'the model'}; one of {', '.join(valid)}"
            )
        codes = {}
        for role in roles:
            samples = as_samples(inputs.acts[role, layer]).float()
            log.info("SAE on %s/%s: %d samples × %d dims", role, layer, *samples.shape)
            model, scale = train_sae(samples, sae_cfg, inputs.seed)
            stats, codes[role] = sae_stats(model, samples, scale, sae_cfg.dense_threshold)
            metrics.update({f"sae/{role}/{layer}/{k}": v for k, v in stats.items()})
        if len(roles) == 2 and len(codes["teacher"]) == len(codes["student"]):
            metrics[f"sae/{layer}/dict_match"] = dictionary_match(
                codes["teacher"], codes["student"]
            )
    return Output(metrics)
