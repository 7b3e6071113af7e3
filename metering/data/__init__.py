"""Shipped default data (price book, plans). A package so the YAML ships in the wheel."""
