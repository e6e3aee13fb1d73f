"""Adapters: the edges of wispgate that speak to the outside world (RADIUS, ...)."""
