"""One thin module per DVC stage, run as `python -m kdlab.stages.<name>` from dvc.yaml."""
