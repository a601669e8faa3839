"""One module per LSP feature; ``server.app`` wires them together."""
