"""Training and evaluation machinery."""
