"""Tests for the SRT eval scripts: their building blocks against independent references (scikit-learn logistic
regression, explicit per-shift loops, hand-counted IoU), and each script's --quick run end to end."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from eval import srt_classify, srt_common, srt_segmentation, srt_visualize
from srjax import stats
from srjax.srt_lib import shift


@pytest.fixture(scope='module')
def vit_workdir(tmp_path_factory):
  """One folder for the smoke ViT, trained by the first script that needs it and reloaded by the others."""
  return str(tmp_path_factory.mktemp('vit_smoke'))


def test_iou_by_hand():
  gt = np.array([[1, 1, 0], [0, 0, 0]], bool)
  pred = np.array([[1, 0, 0], [1, 0, 0]], bool)
  s = srt_segmentation.iou_scores(pred, gt)
  assert s['IoU fg'] == pytest.approx(1 / 3)   # intersection 1, union 3
  assert s['IoU bg'] == pytest.approx(3 / 5)   # background: intersection 3, union 5
  assert s['mIoU'] == pytest.approx((1 / 3 + 3 / 5) / 2)


def test_logistic_probe_matches_sklearn():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(400, 5)).astype(np.float32)
  y = (x @ np.array([1.5, -2.0, 0.5, 0.0, 1.0]) + 0.3 + rng.normal(size=400) > 0).astype(np.float32)
  l2 = 1e-2
  w = np.asarray(srt_segmentation.fit_logistic(jnp.asarray(x), jnp.asarray(y), l2=l2))
  # sklearn minimises 0.5 |w|^2 + C sum(logloss); ours mean(logloss) + 0.5 l2 |w|^2  ->  C = 1 / (n l2).
  ref = LogisticRegression(C=1.0 / (len(y) * l2), tol=1e-10, max_iter=10_000).fit(x, y)
  np.testing.assert_allclose(w[:-1], ref.coef_[0], rtol=2e-3, atol=2e-4)
  np.testing.assert_allclose(w[-1], ref.intercept_[0], rtol=2e-3, atol=2e-4)


def _toy_apply(params, x):
  """A fixed nonlinear 'classifier': 2x2 average pool, tanh, then a linear map of the pooled channels."""
  b, h, w, c = x.shape
  f = jnp.tanh(x.reshape(b, h // 2, 2, w // 2, 2, c).mean((2, 4)) * params)
  return f.mean((1, 2)) @ jnp.arange(1.0, 1.0 + 3 * c).reshape(c, 3)


def test_logit_ensemble_matches_explicit_loop():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 6, 2)), jnp.float32)
  offsets = ((0, 0), (1, -1), (-2, 1))
  got = srt_classify.logit_ensemble(_toy_apply, jnp.float32(1.5), x, offsets)
  ref = np.mean([np.asarray(_toy_apply(1.5, shift(x, o))) for o in offsets], axis=0)
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_pixel_upsample_nearest_and_bilinear():
  f = jnp.arange(4.0).reshape(1, 2, 2, 1)
  near = np.asarray(srt_common.pixel_upsample(f, (4, 4), 'nearest'))[0, ..., 0]
  np.testing.assert_array_equal(near, np.kron(np.arange(4.0).reshape(2, 2), np.ones((2, 2))))
  bil = np.asarray(srt_common.pixel_upsample(f, (4, 4), 'bilinear'))[0, ..., 0]
  # Half-pixel centres: output index 1 sits at input coordinate 0.25 -> 0.75 f[0] + 0.25 f[1]; index 0 at -0.25
  # -> f[0] (edge). f = [[0, 1], [2, 3]]: bil[0, 1] = 0.25; bil[1, 1] = 0.75 * 0.25 + 0.25 * (0.75*2 + 0.25*3).
  assert bil[0, 0] == pytest.approx(0.0) and bil[0, 1] == pytest.approx(0.25)
  assert bil[1, 1] == pytest.approx(0.75) and bil[3, 3] == pytest.approx(3.0)
  with pytest.raises(ValueError, match="'nearest' or 'bilinear'"):
    srt_common.pixel_upsample(f, (4, 4), 'cubic')


def test_srt_head_with_d0_equals_the_forward_pass():
  """Appendix A path (features of the last stage -> srt -> separate head) with the single offset (0, 0)."""
  from srjax.models import resnet
  model = resnet.cifar_resnet(8, num_classes=4, width=4)
  x = jnp.asarray(np.random.default_rng(4).uniform(size=(3, 12, 12, 1)), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  rng = np.random.default_rng(5)
  v = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), jnp.float32), shapes)
  ref = resnet.classify_fn(model)(v, x)
  got = srt_classify.srt_logits(model, v, x, 0, 'exclude')
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  assert float(jnp.std(ref)) > 1e-3  # non-degenerate logits


def test_classify_quick(tmp_path):
  res = srt_classify.main(['--quick', '--out', str(tmp_path)])
  assert os.path.exists(tmp_path / 'results.md') and os.path.exists(tmp_path / 'accuracy_vs_d.png')
  rows = {(r['method'], r['d']): r for r in res['per_seed'][0]}
  single = rows[('single', 0)]['accuracy']
  # d = 0 is the single offset (0, 0): SRT at the feature map + the separate head must equal the plain forward
  # pass digit by digit.
  r = rows[('SRT (exclude)', 0)]
  assert r['accuracy'] == single and r['fixed'] == 0 and r['broken'] == 0, r
  for method in ('SRT (exclude)', 'logits TTA'):
    assert 0.0 <= rows[(method, 1)]['accuracy'] <= 1.0


def test_segmentation_quick(tmp_path, vit_workdir):
  res = srt_segmentation.main(['--quick', '--out', str(tmp_path), '--workdir', vit_workdir])
  for name in ('results.md', 'rows.json', 'verdicts.json', 'miou_vs_cost.png', 'miou_vs_d.png', 'examples.png'):
    assert os.path.exists(tmp_path / name)
  names = [r['features'] for r in res['rows']]
  assert names == ['nearest', 'bilinear', 'larger input x2', 'larger input x3', 'stride trick p/2',
                   'stride trick p/4', 'SRT d=1', 'SRT d=2', 'SRT d=1 on stride p/2']
  for r in res['rows']:
    assert 0.0 <= r['mIoU'] <= 1.0 and r['mIoU'] == pytest.approx((r['IoU fg'] + r['IoU bg']) / 2)
    assert r['mIoU lo'] <= r['mIoU'] <= r['mIoU hi'] and r['s/img'] > 0
    counts = np.asarray(r['per-image counts (fg inter, fg union, bg inter, bg union)'])
    assert counts.shape == (32, 4) and srt_segmentation.miou_from_counts(counts.sum(0)) == pytest.approx(r['mIoU'])
  # The stride trick and the larger input run on 4x / 9x / 16x the tokens.
  assert [r['tokens'] for r in res['rows']][:6] == [49, 49, 196, 441, 196, 784]
  # d is chosen on the validation digits (scored for the SRT rows only), and every verdict is the smoke one.
  val = {r['features']: r['val mIoU'] for r in res['rows'] if r['val mIoU'] != ''}
  assert set(val) == {'SRT d=1', 'SRT d=2'} and val == res['val_miou']
  assert res['chosen'] == max(val, key=val.get)
  record = json.loads((tmp_path / 'verdicts.json').read_text())
  assert record['quick'] and record['module'] == 'eval.srt_segmentation' and record['seconds'] > 0
  assert len(record['verdicts']) >= 3 and {v['verdict'] for v in record['verdicts']} == {stats.SMOKE}
  assert res['chosen'] in record['verdicts'][0]['claim']
  assert record['verdicts'][0]['n'] == [32, 32]
  text = (tmp_path / 'results.md').read_text()
  assert 'reproduced' not in text and 'supported' not in text


def _counts(fg: np.ndarray, bg: np.ndarray, union: int = 1000) -> np.ndarray:
  """Per-image counts [..., N, 4] with foreground / background IoU fg, bg (clipped to [0, 1]) over fixed unions."""
  inter = lambda iou: np.round(np.clip(iou, 0, 1) * union)
  u = np.full(np.shape(fg), union)
  return np.stack([inter(fg), u, inter(bg), u], -1).astype(np.int64)


def _judge_rows(names_costs):
  return [dict(features=n, family=f, **{'s/img': c}) for n, f, c in names_costs]


def test_judge_uses_the_validation_choice_and_tests_every_pair_at_equal_cost():
  rows = _judge_rows([('nearest', 'nearest', 1.0), ('bilinear', 'bilinear', 1.1), ('SRT d=1', 'SRT', 9.0),
                      ('stride trick p/2', 'stride trick', 5.0), ('SRT d=2', 'SRT', 25.0)])
  rng = np.random.default_rng(0)
  n = 200
  difficulty = rng.normal(0, 0.05, n)                              # shared by every method (paired images)
  truth = {'nearest': 0.5, 'bilinear': 0.6, 'SRT d=1': 0.7, 'stride trick p/2': 0.9, 'SRT d=2': 0.8}
  counts = np.stack([_counts(truth[r['features']] + difficulty + rng.normal(0, 0.05, n), 0.95 + 0 * difficulty)
                     for r in rows])
  pooled = {r['features']: float(srt_segmentation.miou_from_counts(c.sum(0))) for r, c in zip(rows, counts)}
  for r in rows:
    r['mIoU'] = pooled[r['features']]
  assert pooled['SRT d=2'] > pooled['SRT d=1']      # the test digits prefer d=2 ...
  val = {'SRT d=1': 0.9, 'SRT d=2': 0.85}           # ... the validation digits d=1: the eval must take d=1
  verdicts, chosen, lines = srt_segmentation.judge(rows, counts, val, ['SRT d=1', 'SRT d=2', 'SRT d=3'])
  assert chosen == 'SRT d=1'
  appendix = verdicts[0]
  assert 'SRT d=1' in appendix.claim and 'validation' in appendix.claim
  assert appendix.effect == pytest.approx(pooled['SRT d=1'] - pooled['bilinear'], abs=1e-12)
  assert appendix.verdict == stats.SUPPORTED and appendix.low > 0
  # Every method that costs no more, each its own claim (the Appendix C pair is not repeated at d=1).
  texts = [v.claim for v in verdicts[1:]]
  assert texts == [f'At equal cost: SRT d={d} beats {o} (which costs no more), mIoU' for d, o in
                   [(1, 'nearest'), (1, 'stride trick p/2'), (2, 'nearest'), (2, 'bilinear'), (2, 'SRT d=1'),
                    (2, 'stride trick p/2')]]
  by_text = {v.claim: v for v in verdicts}
  stride = by_text['At equal cost: SRT d=2 beats stride trick p/2 (which costs no more), mIoU']
  assert stride.effect == pytest.approx(pooled['SRT d=2'] - pooled['stride trick p/2'], abs=1e-12)
  assert stride.effect < 0 and stride.verdict == stats.CONTRADICTED   # the stride trick beats SRT d=2, cheaper
  assert by_text['At equal cost: SRT d=2 beats SRT d=1 (which costs no more), mIoU'].verdict == stats.SUPPORTED
  # One Holm family over the report's claims.
  np.testing.assert_allclose([v.p_holm for v in verdicts], stats.holm([v.p_value for v in verdicts]))
  assert all(f'Holm over {len(verdicts)} claim(s)' in v.procedure for v in verdicts)
  # The stride trick is better and cheaper than both SRT rows: no SRT row on the Pareto front (descriptive).
  assert lines[-1].endswith('nearest, bilinear, stride trick p/2. SRT rows on it: none.'), lines[-1]
  smoke, _, _ = srt_segmentation.judge(rows, counts, val, ['SRT d=1'], quick=True)
  assert {v.verdict for v in smoke} == {stats.SMOKE}


def test_judge_null_is_not_separated():
  """SRT and bilinear equal in truth (per-image noise only): the Appendix C claim is 'not separated'."""
  rows = _judge_rows([('bilinear', 'bilinear', 1.0), ('SRT d=1', 'SRT', 9.0), ('SRT d=2', 'SRT', 25.0)])
  for seed in range(5):
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 0.1, 150)
    counts = np.stack([_counts(0.7 + difficulty + rng.normal(0, 0.05, 150), 0.9 + rng.normal(0, 0.02, 150))
                       for _ in rows])
    for r, c in zip(rows, counts):
      r['mIoU'] = float(srt_segmentation.miou_from_counts(c.sum(0)))
    verdicts, _, _ = srt_segmentation.judge(rows, counts, {'SRT d=1': 0.5, 'SRT d=2': 0.4}, [])
    assert [v.verdict for v in verdicts] == [stats.NOT_SEPARATED], (seed, verdicts)


def test_judge_bad_arguments():
  rows = _judge_rows([('bilinear', 'bilinear', 1.0), ('SRT d=1', 'SRT', 9.0)])
  for r in rows:
    r['mIoU'] = 0.5
  counts = np.stack([_counts(np.full(4, 0.5), np.full(4, 0.9))] * 2)
  with pytest.raises(ValueError, match='counts'):
    srt_segmentation.judge(rows, counts[:1], {'SRT d=1': 0.5}, [])
  with pytest.raises(ValueError, match='val_miou'):
    srt_segmentation.judge(rows, counts, {'SRT d=3': 0.5}, [])
  with pytest.raises(ValueError, match='val_miou'):
    srt_segmentation.judge(rows, counts, {}, [])
  with pytest.raises(ValueError, match='rows'):
    srt_segmentation.judge(rows[1:], counts[1:], {'SRT d=1': 0.5}, [])


def test_pareto_front():
  costs = [1.0, 1.1, 9.0, 5.0, 25.0, 30.0, 1.0]
  scores = [0.60, 0.70, 0.75, 0.80, 0.90, 0.5, 0.55]
  # By hand: nearest (cheapest), bilinear, stride (beats SRT d=1 at less cost), SRT d=2 (the best); 'slow',
  # SRT d=1 and 'tie' (as costly as nearest, worse) are dominated.
  assert srt_segmentation.pareto_front(costs, scores) == [0, 1, 3, 4]


def test_miou_influence_gives_the_pooled_miou_and_its_bootstrap_interval():
  rng = np.random.default_rng(2)
  gt = rng.uniform(size=(60, 6, 6)) > 0.6
  pred = gt ^ (rng.uniform(size=gt.shape) > 0.8)
  counts = srt_segmentation.iou_counts(pred, gt)
  z = srt_segmentation.miou_influence(counts)
  pooled = srt_segmentation.iou_scores(pred, gt)['mIoU']
  assert z.shape == (60,) and z.mean() == pytest.approx(pooled, abs=1e-12)
  assert srt_segmentation.miou_from_counts(counts.sum(0)) == pytest.approx(pooled)
  # Against the bootstrap of the pooled ratio itself (images resampled, the mIoU recomputed from the counts).
  w = rng.multinomial(60, np.full(60, 1 / 60), size=4000)
  direct = srt_segmentation.miou_from_counts(w @ counts.astype(np.float64))
  c = srt_segmentation.row_intervals(counts[None])
  assert float(c.effect[0]) == pytest.approx(pooled, abs=1e-12)
  assert float(c.se[0]) == pytest.approx(direct.std(), rel=0.15)
  assert c.low[0] < pooled < c.high[0]


def test_visualize_quick(tmp_path, vit_workdir):
  res = srt_visualize.main(['--quick', '--out', str(tmp_path), '--workdir', vit_workdir])
  for name in ('results.md', 'lite0_pca.png', 'vit_pca.png'):
    assert os.path.exists(tmp_path / name)
  assert len(res['rows']) == 3 and all(np.isfinite(list(r.values())[2:]).all() for r in res['rows'])


def test_pca_rgb_recovers_a_linear_embedding():
  """Features that are a linear embedding of an RGB image: the PCA colours are an affine map of the pixels."""
  rng = np.random.default_rng(3)
  img = rng.uniform(size=(16, 16, 3))
  feats = img @ rng.normal(size=(3, 10))
  (rgb,) = srt_visualize.pca_rgb(feats)
  inside = np.all((rgb > 0) & (rgb < 1), axis=-1)  # ignore the clipped 1% tails
  a = np.concatenate([img.reshape(-1, 3), np.ones((256, 1))], 1)[inside.ravel()]
  coef, *_ = np.linalg.lstsq(a, rgb.reshape(-1, 3)[inside.ravel()], rcond=None)
  np.testing.assert_allclose(a @ coef, rgb.reshape(-1, 3)[inside.ravel()], atol=1e-6)
  assert jax.tree_util.tree_leaves(rgb)[0].shape == (16, 16, 3)


def test_classify_judge_chooses_on_the_validation_half():
  """The SRT row that gains on the validation half is chosen, though another gains on the test half; every row is
  then judged on the test half alone, Holm-corrected."""
  rng = np.random.default_rng(6)
  n = 400
  val, test = srt_classify.split_halves(n)
  single = rng.uniform(size=n) < 0.7
  d1, d2 = single.copy(), single.copy()
  d1[val] |= rng.uniform(size=val.size) < 0.3      # d=1 gains on the validation half only
  d2[test] |= rng.uniform(size=test.size) < 0.3    # d=2 gains on the test half only
  row = lambda method, d, ok: {'method': method, 'd': d, 'correct': ok}
  per_seed = [[row('single', 0, single), row('SRT (exclude)', 1, d1), row('SRT (exclude)', 2, d2),
               row('logits TTA', 1, single)]]
  verdicts, chosen, sentence = srt_classify.judge(per_seed)
  assert chosen == 'SRT (exclude) d=1' and 'SRT (exclude) d=1' in sentence
  by_label = {v.claim.split(':')[0]: v for v in verdicts}
  assert by_label['SRT (exclude) d=1'].effect == 0.0 and by_label['SRT (exclude) d=1'].verdict == stats.NOT_SEPARATED
  assert by_label['SRT (exclude) d=2'].verdict == stats.SUPPORTED
  assert by_label['SRT (exclude) d=2'].n == (test.size, test.size)
  np.testing.assert_allclose([v.p_holm for v in verdicts], stats.holm([v.p_value for v in verdicts]))
