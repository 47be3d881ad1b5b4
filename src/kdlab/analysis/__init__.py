"""Pure functions on activations: similarity (CKA), dimensionality, separability, ICA, SAEs."""
