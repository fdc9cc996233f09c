"""Runnable examples: `python -m sparseflow.examples.demo_generation`."""
