"""Bounds shared by config validation and command options, so that both refuse the same values."""

__all__ = ["MAX_SIDE"]

# Largest image side (pixels) accepted for an input, output or config size: larger sizes are typos, not images,
# and their label maps would not fit in memory.
MAX_SIDE = 16384
