"""Protege language server: LSP features, configuration, the serving engine and the CLI."""
