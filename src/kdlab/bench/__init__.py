"""`kdlab bench`: kdlab's training loop against a plain reference loop and a compiled bound,
and the DVC operations a grid lives on (repro, queueing, exp show)."""
