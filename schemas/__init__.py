"""Avro contracts (``*.avsc``). Shipped as package data so an installed wheel finds them."""

from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent
