"""Recording: events to the process model, hashes, classification and the LMDB store."""
