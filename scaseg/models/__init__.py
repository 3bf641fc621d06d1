"""SCASeg in PyTorch: MSCAN and MiT encoders, the strip cross-attention decoder, the assembled model."""
