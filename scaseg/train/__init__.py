"""Training: single process or torchrun (DDP with SyncBN)."""
