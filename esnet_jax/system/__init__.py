"""Process plumbing every layer may use: how a command exits (`runner`), XLA's flags
(`xla_flags`), host and model memory (`host_memory`, `memory_budget`) and outputs written
without losing earlier ones (`output_files`). Imports nothing of the package but `errors`."""
