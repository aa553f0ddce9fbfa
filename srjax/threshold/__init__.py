"""Threshold detectors and stochastic-resonance signal recovery (sub, sup and double threshold).

Implements Vimalajeewa et al., "A Multiscale Approach for Enhancing Weak Signal Detection" (arXiv 2510.20828):

* observation model (Eqs. 1-2, 8): x_i = s_i + sigma eps_i, eps ~ N(0, 1); the receiver only sees
  I_a = 1{x < a} and I_b = 1{x > b}, with a < b (`indicators`);
* exceedance rates p_a = P(x < a), p_b = P(x > b), estimated by Nadaraya-Watson kernel smoothing (Sec. II-C,
  `kernel_rates`) or by pooling (Sec. II-B, a constant signal: `estimate_constant`);
* the sub / sup estimators with delta-method variances (Eqs. 4-5, 9, 21), held by an estimator model:
  `SigmaScaled` (the default, s_sub = a - sigma Phi^{-1}(p_a)) or `SigmaFree` (the authors' MATLAB code);
* the double-threshold estimator (Eqs. 6, 10, 17; optimal weights of Appendix A, Eq. 20: `double_weights`);
* the multiscale domain (Sec. II-D, Eqs. 11-17): detection on the orthogonal wavelet coefficients d = W s, the
  trial-averaged estimate mapped back with W^T (`srjax.wavelet`);
* AMSE (Eq. 18), trial-averaged recovery (`recover`) and the (sigma x bandwidth) grid search of Sec. III-A
  (`grid_search`, `grid_program`);
* the proportion of Fisher information kept by one and two thresholds (Sec. II-E; Greenwood et al. 1999).

The package, one concept per file: `fisher` (Fisher information), `kernels` (indicators and the dense kernel),
`models` (the estimator models), `estimators` (combinations, single-observation estimators, AMSE), `settings`
(the record `recover` and `grid_search` share), `smoothing` (the grid search's FFT / banded smoothing),
`trials` (the trial engine) and `grid` (`recover`, `grid_search`).

What `reference_quirks=True` reproduces, from the authors' MATLAB code (published with the paper, Sec. III):
the sigma-free estimator model `SigmaFree` (scores clipped at +-4.5 in 1D and +-6 in 2D, variances
p(1-p)/(N phi^2) with N the number of samples, exact 0/1 rates unclipped); its kernel, taps -h:0.01:h in 1D and
-h:1:h in 2D (`kernels`); zero padding with MATLAB's 'same' alignment. Where the reference divides 0 by 0
(both variances 0: NaN there), srjax uses equal weights. The reference's extra `smoothdata(..., 'gaussian', ww)`
post-smoothing (only in its benchmark-signal drivers) is not reproduced.
"""
from srjax.threshold.estimators import amse
from srjax.threshold.estimators import double_weights
from srjax.threshold.estimators import estimate
from srjax.threshold.estimators import estimate_constant
from srjax.threshold.estimators import estimator_covariance
from srjax.threshold.estimators import sub_sup_estimates
from srjax.threshold.fisher import fisher_double
from srjax.threshold.fisher import fisher_double_maximum
from srjax.threshold.fisher import fisher_single
from srjax.threshold.grid import grid_program
from srjax.threshold.grid import grid_search
from srjax.threshold.grid import GridProgram
from srjax.threshold.grid import GridResult
from srjax.threshold.grid import recover
from srjax.threshold.kernels import indicators
from srjax.threshold.kernels import kernel_matrix
from srjax.threshold.kernels import kernel_rates
from srjax.threshold.models import Estimates
from srjax.threshold.models import EstimatorModel
from srjax.threshold.models import SigmaFree
from srjax.threshold.models import SigmaScaled
from srjax.threshold.settings import BOUNDARIES
from srjax.threshold.settings import DETECTORS
from srjax.threshold.settings import DOMAINS
from srjax.threshold.settings import POOLINGS
from srjax.threshold.settings import Settings
from srjax.threshold.settings import WEIGHTS
from srjax.threshold.smoothing import fft64

__all__ = [
    'fisher_single', 'fisher_double', 'fisher_double_maximum', 'indicators', 'kernel_matrix', 'kernel_rates',
    'sub_sup_estimates', 'double_weights', 'estimator_covariance', 'estimate', 'estimate_constant', 'amse',
    'recover', 'grid_search', 'grid_program', 'GridResult', 'GridProgram', 'Settings', 'Estimates',
    'EstimatorModel', 'SigmaScaled', 'SigmaFree', 'fft64', 'DETECTORS', 'DOMAINS', 'BOUNDARIES', 'WEIGHTS',
    'POOLINGS',
]
