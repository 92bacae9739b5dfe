"""protect package."""
