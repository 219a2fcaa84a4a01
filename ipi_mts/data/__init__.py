"""Structures and datasets."""
