"""The SLURM commands kdlab uses: sbatch to submit, squeue/scontrol/sacct to see job states.

Every command honours SLURM_CONF from the environment, like SLURM's own tools. A test cluster
without an accounting database answers nothing to sacct; squeue (live jobs) and scontrol (jobs
finished within MinJobAge) are asked first, sacct only for jobs neither of them knows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence

from kdlab.errors import KdlabError

# Job states in which the job will still run or is running (squeue's long names).
LIVE_STATES = frozenset({
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
    "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED",
})  # fmt: skip
GONE = "GONE"
"""No SLURM command remembers the job (purged and no accounting)."""

NO_CLUSTER = "no SLURM cluster reachable: set SLURM_CONF or run on the login node"
# What SLURM's clients print when they find no slurm.conf or no slurmctld answers.
_UNREACHABLE = (
    "Could not establish a configuration source",
    "Unable to contact slurm controller",
    "Unable to process configuration file",
    "Socket timed out",
    "Connection refused",
)


class NoClusterError(KdlabError):
    """No SLURM client on PATH, no configuration, or no controller answering."""


def _run(args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        raise NoClusterError(f"{NO_CLUSTER} ({args[0]} not found)")
    conf = os.environ.get("SLURM_CONF")
    if conf and not os.path.isfile(conf):  # SLURM's clients would retry for a minute
        raise NoClusterError(f"{NO_CLUSTER} (SLURM_CONF={conf}: no such file)")
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if proc.returncode != 0 and any(text in proc.stderr for text in _UNREACHABLE):
        said = _last_line(proc.stderr)  # "squeue: fatal: ...": it names itself
        raise NoClusterError(
            f"{NO_CLUSTER} ({said if said.startswith(args[0]) else f'{args[0]}: {said}'})"
        )
    if check and proc.returncode != 0:
        raise KdlabError(f"{args[0]} failed: {_last_line(proc.stderr)}")
    return proc


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


def sbatch(script_path: str, dependency: str | None = None) -> str:
    """Submit a batch script; returns the job id."""
    args = ["sbatch", "--parsable"]
    if dependency:
        # Without kill-on-invalid-dep, a child of a failed job would wait forever.
        args += [f"--dependency={dependency}", "--kill-on-invalid-dep=yes"]
    proc = _run([*args, script_path])
    return proc.stdout.strip().split(";")[0]


def live_jobs() -> dict[str, tuple[str, str, str]]:
    """Job id -> (job name, state, comment) for every job squeue lists for this user."""
    import getpass

    proc = _run(["squeue", "-h", "-u", getpass.getuser(), "-o", "%i|%T|%k|%j"])
    jobs = {}
    for line in proc.stdout.splitlines():
        job_id, state, comment, name = line.strip().split("|", 3)
        jobs[job_id] = (name, state, comment)
    return jobs


def _scontrol_state(job_id: str) -> str | None:
    proc = _run(["scontrol", "-o", "show", "job", job_id], check=False)
    if proc.returncode != 0:
        return None
    for word in proc.stdout.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return None


def _sacct_state(job_id: str) -> str | None:
    if shutil.which("sacct") is None:
        return None
    proc = _run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], check=False)
    lines = proc.stdout.split()
    # "CANCELLED by 0" -> CANCELLED
    return lines[-1].split()[0] if proc.returncode == 0 and lines else None


def job_states(
    job_ids: Iterable[str], live: dict[str, tuple[str, str, str]] | None = None
) -> dict[str, str]:
    """State of each job: live ones from squeue (or `live`, an earlier `live_jobs()`), others
    from scontrol, then sacct, else GONE."""
    live = live_jobs() if live is None else live
    states = {}
    for job_id in job_ids:
        if job_id in live:
            states[job_id] = live[job_id][1]
        else:
            states[job_id] = _scontrol_state(job_id) or _sacct_state(job_id) or GONE
    return states


def is_live(state: str) -> bool:
    return state in LIVE_STATES
