"""Redis balance projection of the credit ledger, the enforcement library and its sidecar.

The projection is derived state: ``credit-ledger`` is the source of truth and
``metering projection rebuild`` recreates every key from it. May import: ``metering``.
"""
