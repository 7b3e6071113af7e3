"""Benchmarks: commands (not tests) that print one JSON object as their last stdout line."""
