"""Operators: PAMR (reference + fused CPU/CUDA kernels registered as ``aesipe::pamr``)."""
from .pamr import PAMR, PamrFallbackWarning, pamr, pamr_backend_for

__all__ = ["PAMR", "PamrFallbackWarning", "pamr", "pamr_backend_for"]
