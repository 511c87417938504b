"""Capture: the kernel side's loading, run cgroups, the event stream and its transport."""
