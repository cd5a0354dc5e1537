"""Bounds: one function per bound, each returning named terms with formula, source and status."""
