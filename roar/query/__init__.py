"""Queries over stored records: views, lineage, diff, reproduce, export, links."""
