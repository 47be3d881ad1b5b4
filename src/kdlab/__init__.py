"""kdlab: reproducible knowledge-distillation experiments."""
