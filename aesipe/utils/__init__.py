"""Small stdlib-only helpers shared by every side of the package (no torch imports here)."""
