"""Per-backend operator conformance suite (see providers.py for how backends join)."""
