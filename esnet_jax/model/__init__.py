"""The network: Flax modules only (`esnet`), the CPU kernels' Flax layers
(`kernel_layers`), the one switch between XLA and the kernels (`implementations`),
BatchNorm folding (`folding`) and the one builder of what inference runs (`deployed`).
No I/O."""
