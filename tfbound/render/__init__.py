"""Renderers: a report in, text or rich renderables out. Nothing here computes a bound."""
