"""An SAE trained streaming from activation shards: seeded order, exact resume, held-out rows.

The recipe follows saev (samuelstevens/saev; its defaults are quoted in kdlab.config's
`SAETrainConfig`, the `sae:` section):
- **Held-out rows**: a seeded draw of whole *samples* (`heldout` of them) is never trained on, so
  every token of a held-out image is unseen; metrics are computed on those rows.
- **Normalisation**: the mean of `norm_samples` training rows is subtracted and the rows are
  scaled so that their mean L2 norm is √d (saev's `scale_mean`, `scale_norm`); both are stored
  with the SAE and applied wherever it is used.
- **b_dec** starts at `zero`, the `mean` or the `geometric_median` (Weiszfeld) of `init_samples`
  normalised training rows.
- Unit-norm decoder columns, with the gradient parallel to each removed before every step.
- Adam; the learning rate and the L1 weight λ rise linearly over `lr_warmup` / `l1_warmup` steps.
- Loss = mean over elements of (x̂ − x)² + λ · mean over rows of ‖f‖₁ (saev's vanilla objective).

**Data order** is a permutation of the training rows drawn from (seed, epoch) with numpy's
default_rng; each batch is gathered from the memmaps in that order. Only that permutation, the
row index (24 bytes a row in all) and one batch are in memory, never the activations.
**Resume**: every `checkpoint_every` steps, and on SIGTERM/SIGUSR1, the SAE, Adam's state, the
step, the firing record and the curves so far are written atomically; a rerun recomputes the
permutation and continues at the next step, so the final SAE file equals an uninterrupted run's,
byte for byte (CPU).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from kdlab.analysis.sae import SparseAutoencoder
from kdlab.config import SAETrainConfig
from kdlab.errors import CheckpointError
from kdlab.extract.shards import ShardSet
from kdlab.progress import bar
from kdlab.training import stop
from kdlab.training.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger("kdlab.sae")

SAE_FORMAT = "kdlab.sae/1"
RESUME_FORMAT = "kdlab.sae-resume/1"


def split_rows(sample_of_row: np.ndarray, heldout: float, seed: int):
    """(training rows, held-out rows), sorted: a seeded draw of whole samples is held out.
    Memory: a byte a row beside the two outputs (no sort of the rows)."""
    if len(sample_of_row) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    samples = np.flatnonzero(np.bincount(sample_of_row))  # those that have rows, ascending
    n_out = min(len(samples) - 1, round(heldout * len(samples))) if heldout > 0 else 0
    out = np.random.default_rng([seed, 1]).choice(samples, size=n_out, replace=False)
    is_out = np.zeros(len(samples) and samples[-1] + 1, dtype=bool)
    is_out[out] = True
    held = is_out[sample_of_row]
    return np.flatnonzero(~held), np.flatnonzero(held)


def draw_rows(rows: np.ndarray, n: int, seed: int, stream: int) -> np.ndarray:
    """A seeded subset of `rows` of size ≤ n, sorted (read in file order)."""
    if len(rows) <= n:
        return rows
    return np.sort(np.random.default_rng([seed, stream]).choice(rows, size=n, replace=False))


def geometric_median(x: torch.Tensor, iterations: int = 100, tol: float = 1e-7) -> torch.Tensor:
    """Weiszfeld's algorithm in float64, started at the mean (deterministic)."""
    x = x.double()
    median = x.mean(dim=0)
    for _ in range(iterations):
        distance = (x - median).norm(dim=1).clamp_min(1e-12)
        weights = 1.0 / distance
        new = (weights[:, None] * x).sum(dim=0) / weights.sum()
        moved = (new - median).norm().item()
        median = new
        if moved < tol * max(1.0, median.norm().item()):
            break
    return median


@dataclasses.dataclass
class Normalizer:
    """x' = (x − mean) · scale."""

    mean: torch.Tensor
    scale: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale

    @classmethod
    def fit(cls, shards: ShardSet, rows: np.ndarray, normalize: bool,
            block_rows: int = 8192) -> Normalizer:  # fmt: skip
        """The mean of `rows` and the scale that gives them mean L2 norm √d, in float64, read
        `block_rows` at a time (two passes; memory does not grow with `norm_samples`)."""
        d = shards.d
        if not normalize:
            return cls(torch.zeros(d), 1.0)
        blocks = range(0, len(rows), block_rows)
        total = torch.zeros(d, dtype=torch.float64)
        for start in blocks:
            total += torch.from_numpy(shards.take(rows[start : start + block_rows])).double().sum(0)
        mean = total / len(rows)
        norms = 0.0
        for start in blocks:
            x = torch.from_numpy(shards.take(rows[start : start + block_rows])).double()
            norms += (x - mean).norm(dim=1).sum().item()
        return cls(mean.float(), math.sqrt(d) / max(norms / len(rows), 1e-12))


def schedule(step: int, peak: float, warmup: int) -> float:
    return peak if warmup <= 0 else peak * min(1.0, (step + 1) / warmup)


def _steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return math.ceil(n_rows / batch_size)


def train_sae_from_shards(
    shards: ShardSet,
    cfg: SAETrainConfig,
    seed: int,
    resume_path: Path | None = None,
    log_step: Callable[[int, dict], None] | None = None,
    log_every: int = 25,
    device: torch.device | None = None,
) -> dict:
    """Train one SAE on `shards`' training rows (on `device`, CPU by default); the SAE payload
    (see save_sae), its tensors on the CPU."""
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    train_rows, heldout_rows = split_rows(shards.sample_of_row(), cfg.heldout, seed)
    if len(train_rows) == 0:
        raise ValueError("no training rows (every sample is held out)")
    d = shards.d
    norm = Normalizer.fit(shards, draw_rows(train_rows, cfg.norm_samples, seed, 2), cfg.normalize)
    gen = torch.Generator().manual_seed(seed)
    sae = SparseAutoencoder(d, cfg.expansion * d, gen)
    init = norm(torch.from_numpy(shards.take(draw_rows(train_rows, cfg.init_samples, seed, 3))))
    with torch.no_grad():
        if cfg.b_dec_init == "mean":
            sae.b_dec.copy_(init.double().mean(dim=0))
        elif cfg.b_dec_init == "geometric_median":
            sae.b_dec.copy_(geometric_median(init))
    sae = sae.to(device)
    norm = Normalizer(norm.mean.to(device), norm.scale)
    optimizer = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    fired = torch.zeros(sae.b_enc.shape, dtype=torch.bool, device=device)
    per_epoch = _steps_per_epoch(len(train_rows), cfg.batch_size)
    total = per_epoch * cfg.epochs
    step, history = 0, []
    if resume_path is not None and resume_path.exists():
        state = load_checkpoint(resume_path, RESUME_FORMAT)
        if state["fingerprint"] != _fingerprint(shards, cfg, seed, log_every):
            raise CheckpointError(f"{resume_path} belongs to another SAE run; remove it to start "
                                  "afresh")  # fmt: skip
        sae.load_state_dict(state["sae"])
        optimizer.load_state_dict(state["optimizer"])
        fired, step, history = state["fired"].to(device), state["step"], list(state["history"])
        log.info("resuming SAE training at step %d of %d", step, total)
    sae.train()
    first = step
    with stop.stop_on_signal():
        for step in bar(range(first, total), "SAE", total=total - first, unit="step"):
            epoch, within = divmod(step, per_epoch)
            if within == 0 or step == first:
                order = np.random.default_rng([seed, 4, epoch]).permutation(train_rows)
            rows = order[within * cfg.batch_size : (within + 1) * cfg.batch_size]
            batch = norm(torch.from_numpy(shards.take(rows)).to(device))
            l1 = schedule(step, cfg.l1, cfg.l1_warmup)
            for group in optimizer.param_groups:
                group["lr"] = schedule(step, cfg.lr, cfg.lr_warmup)
            recon, f = sae(batch)
            mse = (recon - batch).pow(2).mean()
            sparsity = f.abs().sum(dim=1).mean()
            loss = mse + l1 * sparsity
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_gradient()
            optimizer.step()
            sae.normalize_decoder()
            fired |= (f > 0).any(dim=0)
            if (step + 1) % log_every == 0 or step + 1 == total:
                values = {"loss": loss.item(), "mse": mse.item(), "l1": sparsity.item(),
                          "l0": (f > 0).float().sum(dim=1).mean().item(),
                          "dead_so_far": 1.0 - fired.float().mean().item()}  # fmt: skip
                history.append([step + 1, values])
                if log_step is not None:
                    log_step(step + 1, values)
            done = step + 1
            if resume_path is not None and (done % cfg.checkpoint_every == 0 or done == total
                                            or stop._requested):  # fmt: skip
                state = {"format": RESUME_FORMAT, "step": done, "sae": sae.state_dict(),
                         "optimizer": optimizer.state_dict(), "fired": fired.cpu(),
                         "history": history,
                         "fingerprint": _fingerprint(shards, cfg, seed, log_every)}  # fmt: skip
                save_checkpoint(state, resume_path)
            stop.check()
    sae = sae.eval().cpu()
    return {
        "format": SAE_FORMAT, "config": dataclasses.asdict(cfg), "seed": seed,
        "layer": shards.meta["layer"], "d_in": d, "d_latent": cfg.expansion * d,
        "shards_sha256": shards.meta["metadata_sha256"], "steps": total,
        "train_rows": len(train_rows), "heldout_rows": len(heldout_rows),
        "norm_mean": norm.mean.cpu(), "norm_scale": norm.scale, "state_dict": sae.state_dict(),
        "history": history,
    }  # fmt: skip


def _fingerprint(shards: ShardSet, cfg: SAETrainConfig, seed: int, log_every: int) -> dict:
    return {"shards": shards.meta["metadata_sha256"], "config": dataclasses.asdict(cfg),
            "seed": seed, "log_every": log_every}  # fmt: skip


def save_sae(payload: dict, path: Path) -> None:
    save_checkpoint(payload, path)


def load_sae(path: Path) -> tuple[SparseAutoencoder, Normalizer, dict]:
    """An SAE file, verified (content checksum, weights_only), as a module and its normaliser."""
    payload = load_checkpoint(path, SAE_FORMAT)
    sae = SparseAutoencoder(payload["d_in"], payload["d_latent"])
    sae.load_state_dict(payload["state_dict"])
    return sae.eval(), Normalizer(payload["norm_mean"], payload["norm_scale"]), payload


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, norm: Normalizer, shards: ShardSet, rows: np.ndarray,
                 block_rows: int = 4096, almost_dead: float = 1e-7, dense: float = 1e-2,
                 device: torch.device | None = None) -> dict[str, float]:  # fmt: skip
    """Held-out metrics over `rows` (streamed): MSE, normalised MSE, fraction of variance
    explained, mean L0 and the dead / almost-dead / dense latent fractions by firing frequency."""
    device = device or torch.device("cpu")
    sae = sae.to(device)
    norm = Normalizer(norm.mean.to(device), norm.scale)
    n, d = len(rows), shards.d
    zeros = dict(dtype=torch.float64, device=device)
    sum_x = torch.zeros(d, **zeros)
    sum_x2, sse, l0 = torch.zeros((), **zeros), torch.zeros((), **zeros), torch.zeros((), **zeros)
    fires = torch.zeros(sae.b_enc.shape, **zeros)
    for start in range(0, n, block_rows):
        x = norm(torch.from_numpy(shards.take(rows[start : start + block_rows])).to(device))
        recon, f = sae(x)
        x64 = x.double()
        sum_x += x64.sum(dim=0)
        sum_x2 += x64.pow(2).sum()
        sse += (recon.double() - x64).pow(2).sum()
        active = f > 0
        l0 += active.double().sum()
        fires += active.double().sum(dim=0)
    sst = sum_x2 - sum_x.pow(2).sum() / max(n, 1)  # Σ‖x − x̄‖²
    frequency = fires / max(n, 1)
    mse = (sse / (n * d)).item()
    return {
        "mse": mse,
        "nmse": (sse / sst).item() if sst > 0 else float("nan"),
        "fve": (1 - sse / sst).item() if sst > 0 else float("nan"),
        "l0": (l0 / max(n, 1)).item(),
        "dead": (frequency == 0).double().mean().item(),
        "almost_dead": (frequency < almost_dead).double().mean().item(),
        "dense": (frequency > dense).double().mean().item(),
        "rows": n,
    }
