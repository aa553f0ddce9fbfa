"""Robustness and explanation quality of the NSDE ConvNeXt against its ConvNeXt (arXiv 2409.01532, Sec. 4).

    python -m eval.robustness [--arm-a DIR [DIR ...]] [--arm-b DIR [DIR ...]] [--out results/robustness]
                              [--quick | --paper] [--seeds 3] [--n-attack 48] [--n-attr 32] [--steps 25]
                              [--queries 1000] [--eot 20] [--draws N] [--ig-steps 16] [--set field=value ...]

Each arm is a list of `python -m train.nsde` workdirs, one per training seed (a workdir without a checkpoint is a
one-line error). The claims read "arm B against arm A": every effect is mean(arm B) - mean(arm A), whatever the
kinds of the arms, so a null comparison (the same config in both arms, different seeds) runs the same way. With no
workdirs it trains --seeds seeds (0, 1, 2 by default) of each arm with the main job's config
(`configs/spectro.py`): arm A the ConvNeXt (`model.kind=convnext`) in `<out>/runs/convnext-s<seed>`, arm B the
NSDE in `<out>/runs/nsde-s<seed>`, through the shared loop; a rerun reuses those runs and every finished row.
`--workdir DIR` (repeatable) still works: ConvNeXt workdirs form arm A, the others arm B.

What it measures, per model, on the test split of arm A's first model (every model is scored on the same examples,
so the comparisons are paired; every model's data config must match it apart from the seed, which only changes
which spectrograms were generated, so a model trained with seed s meets fresh spectrograms of the same kind):
  * clean accuracy on the whole test split (1,500 spectrograms with the default config): argmax of the deployed
    prediction (the NSDE's softmax averaged over its `model.test_draws` draws, 8 by default);
  * Gaussian noise: accuracy on clip(x + s N(0, 1), 0, 1) for s in 0.01..0.2, whole test split;
  * robust accuracy under AutoAttack (`srjax.attack.autoattack`, Croce & Hein 2020) on the first --n-attack test
    spectrograms, L2 and Linf: version 'rand' (APGD-CE and APGD-DLR with EOT over --eot = 20 draws) for a
    stochastic model (the NSDE), 'standard' (APGD-CE, APGD-T, FAB-T, Square) for a deterministic one. Each
    attack's log (robust accuracy after it, seconds) is in results.md. **Stated deviation for CPU cost**: 25 APGD
    and FAB iterations instead of 100, and Square with 1,000 queries instead of 5,000 (`--paper`: 100 and 5,000);
  * gradient-masking checks (Carlini et al. 2019, "On evaluating adversarial robustness", Sec. 5): per arm and
    norm, (a) robust accuracy never rises with eps (a rise counts when it exceeds 2 SE of the paired per-example
    difference), and it reaches about 0 (at most 5% + 2 SE) at one large eps added to the grid (L2 8, Linf
    32/255); (b) at the largest eps of the regular grid, neither the gradient-free Square attack (1 draw per
    query, its output judged with --eot draws) nor APGD-CE examples crafted on a deterministic model of the other
    arm (the ConvNeXt) and transferred beat the white-box AutoAttack by more than 2 SE. When a check of the arm a
    robustness claim favours fails, that claim reads "possibly masked" instead of `supported`;
  * attribution stability (`srjax.attribution.stability`): the relative L2 change of integrated-gradients
    attributions of the predicted class under uniform perturbations of Linf radius 0.02, without and with the
    noise tunnel (SmoothGrad over 4 noisy copies, std 0.1), with the model's draws held fixed;
  * ABC (`srjax.attribution.abc`, Jha et al. 2019) with the deployed number of draws (`model.test_draws`);
  * a summary by SNR band of the spectrogram (`Dataset.extras['snr_db']`: < 0 dB, 0-10 dB, >= 10 dB).
The attribution metrics use the first --n-attr test spectrograms.

Verdicts: each claim stacks the per-example scores of each arm into [seeds, examples] and goes through
`srjax.stats.compare` (hierarchical bootstrap over seeds then examples, paired), then `srjax.stats.assess` (Holm
across this report's claims). Vocabulary: `supported`, `not separated`, `contradicted`, plus "possibly masked"
(see above); a --quick run reads `not assessed (smoke run)`. ABC is compared on the attribution examples that
every model of both arms classifies correctly (the paper's "ABC on correct predictions", paired). What the
default design can detect (`srjax.stats`' simulations): with 3 seeds per arm and 1,500 paired examples, about 6
accuracy points for clean and noise accuracy; the attack and attribution subsets (48 and 32 examples) detect only
large effects (tens of points).

Cost, measured (the committed results/robustness run, 2026-12-05, 2-core AMD EPYC, load average 1.9 to 6
because the test suite ran beside it for part of the time): 6 trainings of 1,500 steps ~43 min; the
measurements 70 min (NSDE 13 to 20 min each, mostly AutoAttack 'rand' with EOT 20 and the noise tunnel;
ConvNeXt 5 to 12 min each, mostly FAB-T and Square on the points APGD leaves); about 1 h 50 min of wall time in
all (not measured on a quiet machine; there one NSDE trains in ~3 min 50 s, see configs/spectro.py). Each row's
seconds are in results.md's cost table.
`--paper` (5 seeds, the `:paper` training preset, 100 steps, 5,000 queries, 500 attacked and 100 attributed
examples) is for an accelerator. `--quick` uses the `:smoke` preset (with `model.depthwise=conv` and
`model.solver=scan`, which compile faster; same math), 2 seeds per arm and tiny settings; it is compile-bound.

Outputs in --out: results.md, verdicts.json (for `python -m eval.report`), rows.jsonl (one finished measurement
per line: a killed run resumes), figures noise.png, robust.png, attribution.png.

The package follows one spectrogram from the arms to results.md, one file per step: `settings` (what changes a
number, the flags), `arms` (workdirs loaded or trained), `measure` (each measurement a value, `Measurement`:
its row name, group, threat model and the function computing its per-example numbers; nothing is parsed back
from a row name), `claims` (per-example scores, masking checks, verdicts through `srjax.stats`), `report` and
`figures` (results.md's sections and plots), `run` (the entry point).
"""
from eval.robustness.arms import check_same_data, load_arms, load_model, train_default_models, train_runs
from eval.robustness.claims import CLAIMS, arm_scores, bands, blackbox_flags, masking_checks, rise_flags, verdicts
from eval.robustness.measure import Evaluator, Measurement, attack_grid, measurements, merge_logs, plan, row_name
from eval.robustness.run import evaluate, judge, main
from eval.robustness.settings import MASKED, MODULE, QUICK, Model, Settings, settings_from
