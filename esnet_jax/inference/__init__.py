"""Inference for users: `Segmenter` (normalise, pad, test-time augmentation, any engine),
files in and files out (`predict`), video frames through a pipeline of threads
(`video_pipeline`) and colour overlays (`visualize`)."""
