"""Reasoning mode: generated chain-of-thought answers and the extraction that turns them into choices."""
