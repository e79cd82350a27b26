"""Helpers shared by more than one test area (area-specific helpers stay in their area)."""
