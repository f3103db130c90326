"""Exports of our items for other tools: ``python -m suneung_lit.export lm-eval DATA --output DIR``."""
