"""Chunks -> images: spectral matrices and their plots."""
from .plotting import plot_matrix
from .spectral import min_chunk_length, spectral_matrix

__all__ = ["min_chunk_length", "plot_matrix", "spectral_matrix"]
