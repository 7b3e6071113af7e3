"""The stream processor: a faust app that turns usage events and credit commands into the ledger."""
