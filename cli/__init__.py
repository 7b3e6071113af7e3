"""The ``metering`` command (``cli.main``): one entry point for every component, the local
stack, the demo and the benchmarks. A composition root: it may import every package, and no
product package imports it.
"""
