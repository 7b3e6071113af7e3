"""Benchmarks: commands (not tests) that print one JSON object as their last stdout line, each
figure beside a baseline measured in the same run (``metering bench engine|processor|enforce|
sink``). May import every package; no product package imports them.
"""
