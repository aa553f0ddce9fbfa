"""Multiscale threshold SR: reproduces Tables I-II and Figs. 3, 5-9 of arXiv 2510.20828.

    python -m eval.multiscale [--out results/multiscale] [--quick] [--reference-quirks | --correct-only]
                              [--no-figures] [--fresh] [--size 512] [--n-trials 100] [--n-sigma 24]
                              [--set field=value]

Cost (2 CPU cores): the default run computes every Table I and Table II row twice, with srjax's correct
estimators and with `reference_quirks=True`, each over 5 noise seeds (240 grid searches): about five minutes at
the default 256^2 image size (one seed took about a minute; `--set noise_seeds=1` restores that, but then no row
has an interval and none counts) (results.md's Timing section records the wall and CPU time of each run, with
the load average). It then draws the figures, the Fig. 9 level sweep included (a few minutes more); the
statistics take about a second. `--quick` runs everything on tiny grids (one bandwidth, 10 trials, 3 noise
seeds) in well under a minute (15 s with `--no-figures` and a warm compilation cache), mostly XLA compile
time, and draws the recovered-signal figures for the first mode only (the test). `--set field=value` overrides
any field of `eval.multiscale.Settings`.

Verdicts (`srjax.stats`; `report.assess`). Each of the paper's orderings (the double detector beats sub and sup;
the multiscale domain needs less noise; it gives a lower AMSE) is checked row by row: one claim per row, the mean
over the noise seeds of the paired per-seed difference with a 95% interval (`srjax.stats.compare`, the seeds as
units, t with S - 1 df). All 96 row claims of a default run (48 per mode) are Holm-corrected together, and a row
counts for its ordering only when its claim is `supported`; `contradicted` rows show the opposite ordering.
With 5 seeds that takes a mean difference of about 10 standard errors of the seed mean (t(4) at 0.05 / 96),
i.e. about 4.6 times the seed-to-seed sd of the difference.
verdicts.json records every row claim for `python -m eval.report`; a --quick run reads 'not assessed (smoke
run)'.

What it does
------------
For every row (signal x domain x estimator mode) `srjax.threshold.grid_search` evaluates the AMSE (Eq. 18) of
the sub, sup and double detectors over a (sigma x bandwidth) grid in one jitted call, and keeps the minimum for
each detector. One compiled function serves every signal of the same shape (thresholds are the same for all
signals, and the wavelet matrix is an argument), so the run compiles 4 grid functions per estimator mode.

Settings (fixed before looking at any result; nothing was tuned toward the paper's numbers):

* thresholds a = -2, b = 2 for every signal: all of them satisfy |s| <= 1 (sine and sin*cos in [-1, 1], the
  benchmark signals in [0.2, 0.8], images in [0, 1]), so the thresholds are at least twice the largest signal
  value, the paper's definition of a weak signal (Sec. III-A1). The same numbers apply to the wavelet
  coefficients (as in the reference code).
* sigma grid linspace(0.1, 3, n_sigma) (the reference's range), n_trials = 100 (Sec. III-A), common random
  numbers across the grid (see srjax.threshold).
* 1D (n = 1024): Nadaraya-Watson rates, estimates averaged over trials (pooling='estimates', as the paper and
  the reference). Bandwidths: correct mode 0.5, 1, 2, 4, ..., 64 samples (Gaussian sd); quirks mode the reference's
  kernel_width linspace(0.1, 1, n_h) (sd 10..100 samples, cut at +-1 sd).
* 2D (images and sin*cos, size x size, default 256; the paper uses 512, `--size 512`): the paper's parametric
  approach (Sec. III-A1, "not a time-varying signal"): per-pixel rates pooled over the trials
  (pooling='rates'), optionally smoothed by a small Gaussian (bandwidths 0.01 = none, 1, 2, 4, 8 pixels).
* wavelet domain: Symmlet 8, periodic, level 3 in 1D (the paper's text, Sec. III-B2) and in 2D (the
  reference). Correct mode uses PyWavelets' alignment; quirks mode the reference's `dwtr` alignment (1D) and
  `Wavmat` alignment (2D) from `srjax.wavelet`. Fig. 9 sweeps the 1D level.
* images: Cameraman is `pywt.data.camera()`; Barbara, Mandrill and Peppers are stand-ins from scikit-image
  (astronaut, chelsea, coffee; see `srjax.signals.IMAGE_STANDINS`), grayscale, scaled to [0, 1].

Outputs in --out: `rows.jsonl` (one JSON line per finished row, appended as soon as the row finishes: nothing
is lost on a crash, and a rerun with the same --out and settings skips the rows already there; `--fresh`
recomputes everything), PNG figures, `results.md` (tables next to the paper's numbers, the orderings the
paper claims and on how many rows they are supported, every row claim, figure links, settings, timings) and
`verdicts.json`.

The package: `experiment` (settings, rows, one grid search per row), `report` (tables and claims), `figures`
and `driver` (flags, the resumable row store of `eval.scaffold`, results.md).
"""
from eval.multiscale.driver import main, parse_args, run_jobs, settings_from
from eval.multiscale.experiment import (DETECTORS, DOMAINS, IMAGES, MODES, Job, Settings, get_row, level_jobs,
                                        make_settings, run_row, table_jobs)
from eval.multiscale.report import assess, orderings, sections
