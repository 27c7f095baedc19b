"""Training: the train state, step and loop (`trainer`), the loss (`losses`), the data-parallel
step over a mesh (`mesh_step`), the training checkpointer (`checkpointer`), progress and
metric writers (`metric_writers`), training curves (`plots`) and the workdir lock
(`workdir_lock`)."""
