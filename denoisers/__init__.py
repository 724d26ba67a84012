"""Pluggable denoisers: priors and penalties on the weights, channels and losses on the outputs.

See `denoisers.base` for the two protocols a new denoiser implements.
"""
from denoisers.base import InputDenoiser, OutputDenoiser
from denoisers.channels import Abs, Door, Linear, ReLU, ScalarChannel, Sign
from denoisers.losses import Hinge, Logistic, ScalarLoss, Square
from denoisers.penalties import L1, L2, ElasticNet
from denoisers.priors import BernoulliGauss, Gaussian, GaussMixture, Rademacher, SparseRademacher

__all__ = [
    "InputDenoiser", "OutputDenoiser", "ScalarChannel",
    "Gaussian", "Rademacher", "BernoulliGauss", "GaussMixture", "SparseRademacher",
    "Linear", "Sign", "ReLU", "Abs", "Door",
    "L2", "L1", "ElasticNet", "ScalarLoss", "Square", "Logistic", "Hinge",
]
