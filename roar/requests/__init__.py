"""Training requests: policies, filing, review and the gate before a run."""
