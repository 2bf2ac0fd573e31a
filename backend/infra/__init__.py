"""Plumbing every stage uses: errors, progress events, the stage cache."""
