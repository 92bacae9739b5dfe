"""recover package."""
