"""Suggestion screen: Bandit-based fragment-aware checks, secrets, JS/TS rules and policy."""
