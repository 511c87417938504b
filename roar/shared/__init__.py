"""The shared store: every node's runs pushed to one PostgreSQL database
(outbox, schema, push) and queried across nodes (backend)."""
