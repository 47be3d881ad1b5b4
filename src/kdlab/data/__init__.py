"""Datasets: acquisition into uint8 arrays + meta.json, and a tensor-resident batch loader."""
