"""Deployment: ONNX and StableHLO export (`export`, `export_options`, `onnx_graph`, the file
contract `onnx_contract`), INT8 quantization (`quantize`) and the inference engines that run
the exported files or the Flax network (`engines`)."""
