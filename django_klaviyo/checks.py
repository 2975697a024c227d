"""Placeholder: system checks arrive with the foundation."""
