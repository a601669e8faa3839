"""Repository index: tree-sitter chunking, incremental ChromaDB store, hybrid retrieval, repo map."""
