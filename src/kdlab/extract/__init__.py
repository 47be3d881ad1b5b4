"""Activations and attention maps of trained models, cached as memmapped arrays."""
