"""Data in: the dataset sources and their registry (`datasets`), image transforms
(`transforms`), the grain input pipeline (`input_pipeline`), a config file's dataset part
(`dataset_configs`), and image and video files (`image_files`, `video`)."""
