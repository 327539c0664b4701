"""The `npa` command."""
