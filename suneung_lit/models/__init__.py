"""Model acquisition: turn models published outside a model hub into plain transformers folders."""
