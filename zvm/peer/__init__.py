"""peer package."""
