"""Account page and its JSON API, served next to the sidecar's balance API."""
