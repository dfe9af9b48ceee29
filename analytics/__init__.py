"""Reducers (numba) and what they emit: order flow, book, gamma, levels."""
