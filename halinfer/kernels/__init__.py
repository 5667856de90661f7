"""Kernels more than one plugin runs (no plugin imports another: they share these)."""
