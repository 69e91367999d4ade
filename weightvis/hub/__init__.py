"""Hugging Face Hub."""
