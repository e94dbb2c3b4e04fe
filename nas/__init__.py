"""effnas: architecture spec, builder, counters, proxy evaluation and the NAS search."""
