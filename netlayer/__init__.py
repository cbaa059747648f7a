"""netlayer: the data plane (Flink's network stack, with single-task-recovery semantics)."""
