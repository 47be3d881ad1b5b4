"""`slurm:` in params.yaml: the resources and scripts of every experiment job."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from kdlab.errors import ConfigError
from kdlab.schema import build_dataclass, check_items, check_range

_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_NAMES = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")
"""A partition or account name as SLURM accepts it (letters, digits, _ . -; partitions may be a
comma-separated list). No space, quote or `;`: the value goes onto an `#SBATCH` line."""
_OPTION = re.compile(r"^--[A-Za-z][A-Za-z0-9-]*(=[^\s'\"\\`$;|<>]+)?$")
"""An sbatch option: --name or --name=value, one token with no shell or quoting characters
(sbatch splits #SBATCH lines at whitespace and honours quotes)."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclasses.dataclass(frozen=True)
class SlurmConfig:
    """`slurm:` resources and set-up of the experiment jobs (command-line flags override)."""

    partition: str = ""
    """Partition (sbatch --partition); "" = the cluster's default."""
    account: str = ""
    """Account to charge (sbatch --account); "" = your default."""
    gpus: int = 1
    """GPUs per experiment (sbatch --gpus); 0 = a CPU job."""
    cpus: int = 4
    """CPU cores per experiment (sbatch --cpus-per-task)."""
    mem: str = "16G"
    """Memory per experiment (sbatch --mem), e.g. 16G; "" = the partition's default."""
    time: str = "04:00:00"
    """Time limit (sbatch --time): minutes, HH:MM:SS or D-HH:MM:SS."""
    signal_seconds: int = 300
    """USR1 this many seconds before the time limit: training checkpoints, the job requeues."""
    scratch: str = ""
    """Shared directory for the per-experiment workspaces; "" = .kdlab/workspaces in the repo."""
    template: str = "slurm/experiment.sbatch"
    """The sbatch template, relative to the repository root."""
    setup: str = ""
    """Shell lines run before the experiment (module load ...); the repo's .venv is on PATH."""
    extra: tuple[str, ...] = ()
    """More sbatch options, e.g. ["--qos=high", "--constraint=a100"]."""
    experiments_per_gpu: int = 1
    """Experiments packed into one job, run concurrently on its GPU(s), for models too small to
    fill a card; gpus, cpus and mem are per job, so raise cpus and mem with it."""

    def validate(self, path: str) -> None:
        for name in ("partition", "account"):
            value = getattr(self, name)
            if value and not _NAMES.match(value):
                raise ConfigError(
                    f"{path}.{name} must be a SLURM {name} name (letters, digits, _ . -; "
                    f'several joined by commas) or "", got {value!r}'
                )
        for name in ("scratch", "template"):
            if _CONTROL.search(getattr(self, name)):
                raise ConfigError(f"{path}.{name} must be a path without control characters "
                                  f"(newline, tab, ...), got {getattr(self, name)!r}")  # fmt: skip
        if not self.template:
            raise ConfigError(f'{path}.template must name the sbatch template, got ""')
        check_range(f"{path}.gpus", self.gpus, 0, 64)
        check_range(f"{path}.cpus", self.cpus, 1, 1024)
        check_range(f"{path}.signal_seconds", self.signal_seconds, 0, 65535)
        check_range(f"{path}.experiments_per_gpu", self.experiments_per_gpu, 1, 64)
        if not _TIME.match(self.time):
            raise ConfigError(
                f"{path}.time must be minutes, HH:MM:SS or D-HH:MM:SS, got {self.time!r}"
            )
        if self.mem and not _MEM.match(self.mem):
            raise ConfigError(f"{path}.mem must be a size like 16G or 4000M, got {self.mem!r}")
        if self.extra:
            check_items(f"{path}.extra", self.extra)
        for i, option in enumerate(self.extra):
            if not _OPTION.match(option):
                raise ConfigError(
                    f"{path}.extra[{i}] must be one sbatch option like --qos=high (no spaces, "
                    f"quotes or shell characters), got {option!r}"
                )

    def sbatch_options(self) -> list[str]:
        """The resource options, as `#SBATCH` arguments."""
        options = [f"--cpus-per-task={self.cpus}", f"--time={self.time}"]
        if self.partition:
            options.append(f"--partition={self.partition}")
        if self.account:
            options.append(f"--account={self.account}")
        if self.gpus:
            options.append(f"--gpus={self.gpus}")
        if self.mem:
            options.append(f"--mem={self.mem}")
        return options + list(self.extra)


def load_slurm_config(raw: Any, overrides: dict[str, Any] | None = None) -> SlurmConfig:
    """`slurm:` from params.yaml with command-line overrides (None values are ignored)."""
    merged = dict(raw or {})
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build_dataclass(SlurmConfig, merged, "slurm")
