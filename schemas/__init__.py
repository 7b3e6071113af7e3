"""Avro contracts (``*.avsc``) and their registry (``registry.json``). Shipped as package data
so an installed wheel finds them. Imports nothing; read by ``metering.avro``.
"""

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
