"""Tests for the SRT eval scripts: their building blocks against independent references (scikit-learn logistic
regression, explicit per-shift loops, hand-counted IoU), and each script's --quick run end to end."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from eval import srt_classify, srt_common, srt_segmentation, srt_visualize
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
  for name in ('results.md', 'rows.json', 'miou_vs_cost.png', 'miou_vs_d.png', 'examples.png'):
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
  text = (tmp_path / 'results.md').read_text()
  assert 'reproduced' not in text and 'beats' not in text and text.count('not assessed (smoke run)') >= 3


def test_pareto_front_and_cost_verdicts():
  rows = [dict(features=n, family=f, **{'s/img': c, 'mIoU': m}) for n, f, c, m in [
      ('nearest', 'nearest', 1.0, 0.60), ('bilinear', 'bilinear', 1.1, 0.70), ('SRT d=1', 'SRT', 9.0, 0.75),
      ('stride trick p/2', 'stride trick', 5.0, 0.80), ('SRT d=2', 'SRT', 25.0, 0.90), ('slow', 'nearest', 30.0, 0.5),
      ('tie', 'nearest', 1.0, 0.55)]]
  # By hand: nearest (cheapest), bilinear, stride (beats SRT d=1 at less cost), SRT d=2 (the best); 'slow',
  # SRT d=1 and 'tie' (as costly as nearest, worse) are dominated.
  assert srt_segmentation.pareto_front([r['s/img'] for r in rows], [r['mIoU'] for r in rows]) == [0, 1, 3, 4]
  # Paired bootstrap stand-in: each method's samples = its mIoU + a shared jitter, so differences are exact.
  jitter = np.random.default_rng(0).normal(0, 0.01, 500)
  boot = np.array([r['mIoU'] + jitter for r in rows])
  lines = srt_segmentation.cost_verdicts(rows, boot, ['SRT d=1', 'SRT d=2', 'SRT d=3'], quick=False)
  assert len(lines) == 3  # SRT d=3 is absent
  assert '**stride trick p/2**' in lines[0] and 'stride trick p/2 beats SRT d=1' in lines[0]
  assert '**SRT d=2**' in lines[1] and 'SRT d=2 beats every method' in lines[1]
  assert 'Is SRT on the front? yes: SRT d=2.' in lines[2]
  quick = srt_segmentation.cost_verdicts(rows, boot, ['SRT d=1'], quick=True)
  assert all('not assessed (smoke run)' in line and 'beats' not in line for line in quick)


def test_paired_bootstrap_miou_matches_pooled_iou():
  rng = np.random.default_rng(2)
  gt = rng.uniform(size=(12, 6, 6)) > 0.6
  pred_a = gt ^ (rng.uniform(size=gt.shape) > 0.9)
  pred_b = gt ^ (rng.uniform(size=gt.shape) > 0.7)
  counts = np.stack([srt_segmentation.iou_counts(p, gt) for p in (pred_a, pred_b, pred_a)])
  for c, p in zip(counts, (pred_a, pred_b)):
    assert srt_segmentation.miou_from_counts(c.sum(0)) == pytest.approx(srt_segmentation.iou_scores(p, gt)['mIoU'])
  boot = srt_segmentation.paired_bootstrap_miou(counts, n_boot=300)
  np.testing.assert_array_equal(boot[0], boot[2])  # the same resample for every method
  assert boot[0].std() > 0 and not np.array_equal(boot[0], boot[1])
  lo, hi = srt_segmentation.interval(boot[0])
  assert lo < srt_segmentation.iou_scores(pred_a, gt)['mIoU'] < hi


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
