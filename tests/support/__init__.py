"""Helpers shared by test modules (no fixtures, no tests): test modules import these, never each other."""
