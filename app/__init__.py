"""The application layer: what `main.py` runs for each mode, and what it
prints. The library (`efficientnetv2_tf`) never imports it."""
