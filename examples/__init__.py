"""Runnable example jobs and demos."""
