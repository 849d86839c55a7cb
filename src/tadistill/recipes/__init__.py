"""Recipes: each one a readable, top-to-bottom program (distill, quickstart)."""
