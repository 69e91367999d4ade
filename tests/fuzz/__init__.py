"""Fuzzing: mutated checkpoints and hostile inputs through the CLI (bounded in CI; see README)."""
