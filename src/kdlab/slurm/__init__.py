"""Running the grid on SLURM: params (`slurm:`), the job ledger, sbatch rendering, submission."""
