"""Stateful building blocks: momentum encoder, key queue, shuffle-BN, gathers."""
