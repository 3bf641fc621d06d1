"""The data side, torch-free: dataset readers, class tables, image decoding, metrics and synthetic scenes.

Used by training, calibration, export (parity images) and the runtime (scaseg-bench --data); imports numpy and
OpenCV only.
"""
