"""Agents that play 2048 and the evaluation that plays them (games, scores, tile rates)."""
