"""Sparse autoencoders trained from activation shards: held-out evaluation, top-k examples."""
