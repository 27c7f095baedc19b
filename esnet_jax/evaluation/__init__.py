"""Evaluation: confusion matrices and mIoU (`metrics`), the one evaluator of a dataset split
(`evaluator`) and the evaluation of an exported ONNX file (`onnx_eval`)."""
