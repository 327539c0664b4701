"""The hardware: an SR-IOV NIC model. Knows nothing of wasm or of the shell."""
