"""scaseg-prune: structured channel pruning of a trained SCASeg (docs/pruning.md)."""
