"""The training loop shared by teachers and students, seeding, checkpoints and resume."""
