"""Weights in and out: PyTorch names and layouts to Flax variables (`convert`), the one
resolver of every weights source (`resolver`), reading orbax checkpoints (`checkpoints`),
the shipped weights (`pretrained`) and the original PyTorch network for parity
(`torch_reference`, optional torch)."""
