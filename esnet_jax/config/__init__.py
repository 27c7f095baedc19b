"""Settings: each tool's options as one checked object (`options`) and the config checks
run once before training or evaluation (`validation`)."""
