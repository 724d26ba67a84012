"""Pluggable denoisers: priors and penalties on the weights, channels and losses on the outputs.

See `denoisers.base` for the two protocols a new denoiser implements.
"""
from denoisers.attention import TiedAttention, TwoLayerAttention
from denoisers.base import InputDenoiser, OutputDenoiser
from denoisers.channels import Abs, Door, Linear, ReLU, ScalarChannel, Sign
from denoisers.committee import Committee, abs_difference, sign_z1_times_z2, z1_times_z2
from denoisers.generic import Quadrature
from denoisers.losses import Hinge, Logistic, ScalarLoss, Square
from denoisers.penalties import L1, L2, ElasticNet
from denoisers.priors import (BernoulliGauss, Gaussian, GaussMixture, MultiGaussMixture, Product, Rademacher,
                              SparseRademacher)
from denoisers.product_channel import ProductChannel

__all__ = [
    "InputDenoiser", "OutputDenoiser", "ScalarChannel",
    "Gaussian", "Rademacher", "BernoulliGauss", "GaussMixture", "SparseRademacher", "MultiGaussMixture", "Product",
    "Linear", "Sign", "ReLU", "Abs", "Door",
    "L2", "L1", "ElasticNet", "ScalarLoss", "Square", "Logistic", "Hinge",
    "Quadrature", "Committee", "ProductChannel", "z1_times_z2", "sign_z1_times_z2", "abs_difference",
    "TwoLayerAttention", "TiedAttention",
]
