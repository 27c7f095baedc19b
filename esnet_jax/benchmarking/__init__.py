"""ESNet's benchmarks in small parts; the command is `python -m esnet_jax.benchmark`.

- `timing`: alternating contenders, medians, I/O steps, peak memory, traces;
- `machine`: the CPU, ISA flags, device and versions a figure was measured on;
- `contenders`: random weights, the PyTorch original and ONNX Runtime;
- `runners`: the inference and train-step measurements;
- `engine_runs`: every inference engine at every precision, side by side (`--engines`);
- `report`: the tables and the JSON file;
- `gpu_report`: the whole GPU report (`--suite gpu`).
"""
