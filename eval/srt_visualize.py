"""SRT feature visualisation (paper Fig. 2 and Fig. 4): PCA(3) -> RGB of single-pass, bilinear and SRT features,
the SRT variance map, and the distance of SRT / bilinear features to the single pass.

    python -m eval.srt_visualize --out results/srt_visualize [--workdir DIR] [--quick]

Two backbones:
  * EfficientNet-Lite0 with its real ImageNet weights (`srjax.models.efficientnet`) on scikit-image's bundled
    photos (astronaut, chelsea, coffee, rocket), resized to 224x224, features at output stride 16 (112 ch);
  * the small ViT (patch 4) trained here on the embedded MNIST subset (`configs/srt_classifier.py`), on test
    digits, last-block tokens after LayerNorm.
SRT: `srjax.srt(..., output='pixel', aggregate='mean_var')`, zero fill, one pass giving the mean (the SRT
features) and the per-channel variance over shifts (summed over channels for the map). Offsets: for Lite0 the
full grid d = 7 (225 shifts, as the paper's Fig. 2 for patch-16 ViTs; `--lite-d 6 --lite-step 2` gives a
cheaper 49-shift grid), for the ViT the full grid d = 3 (49 shifts, patch 4).
PCA is fitted per image on the SRT features and the same projection is applied to the other two, so colours
are comparable across a row. Columns "|SRT - single|" and "|bilinear - single|" are the per-pixel L2 distances
of Fig. 4 (SRT's differ at object boundaries; bilinear's form a grid).

Cost (2-core laptop CPU): about 1-3 min (dominated by 4 x 225 Lite0 forwards at 224^2), plus the ViT training
(1-3 min) when no --workdir holds it. `--quick` (one photo at 96x96, 9 shifts, a 10-step tiny ViT on 2 digits)
takes well under a minute and is what the test runs.

Writes lite0_pca.png, vit_pca.png and results.md into --out.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import skimage.data  # pylint: disable=wrong-import-position

from eval import scaffold, srt_common  # pylint: disable=wrong-import-position
from srjax.models import efficientnet  # pylint: disable=wrong-import-position
from srjax.srt_lib import offsets_grid, srt  # pylint: disable=wrong-import-position
from train import srt_classifier  # pylint: disable=wrong-import-position

PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket')


def pca_rgb(ref: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """Projects [H, W, C] maps on the top-3 principal components of `ref`, scaled to [0, 1] by ref's 1-99%."""
  h, w, c = ref.shape
  flat = ref.reshape(-1, c)
  mean = flat.mean(0)
  _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
  comps = vt[:3].T
  proj = lambda f: (f.reshape(-1, c) - mean) @ comps
  p_ref = proj(ref)
  lo, hi = np.percentile(p_ref, 1, axis=0), np.percentile(p_ref, 99, axis=0)
  scale = lambda p: np.clip((p - lo) / np.maximum(hi - lo, 1e-8), 0, 1).reshape(h, w, 3)
  return [scale(p_ref)] + [scale(proj(f)) for f in others]


def feature_panels(feature_fn, params, images: np.ndarray, offsets) -> list[dict[str, np.ndarray]]:
  """Per image: single (nearest), bilinear, SRT mean, SRT variance map and the two L2 distance maps."""
  size = images.shape[1:3]
  feats = jax.jit(lambda p, x: feature_fn(p, x))(params, images)
  nearest = np.asarray(srt_common.pixel_upsample(feats, size, 'nearest'))
  bilinear = np.asarray(srt_common.pixel_upsample(feats, size, 'bilinear'))
  mean, var = srt(feature_fn, params, images, offsets=offsets, output='pixel', aggregate='mean_var')
  mean, var = np.asarray(mean), np.asarray(var)
  out = []
  for i in range(len(images)):
    single_rgb, bil_rgb, srt_rgb = pca_rgb(mean[i], nearest[i], bilinear[i])[1:] + pca_rgb(mean[i])[:1]
    out.append({'single': single_rgb, 'bilinear': bil_rgb, 'SRT': srt_rgb,
                'SRT variance': np.sqrt(var[i].sum(-1)),
                '|SRT - single|': np.linalg.norm(mean[i] - nearest[i], axis=-1),
                '|bilinear - single|': np.linalg.norm(bilinear[i] - nearest[i], axis=-1)})
  return out


def plot_grid(images: np.ndarray, panels: list[dict[str, np.ndarray]], out: str, name: str, title: str) -> None:
  """One row per image: the image, then the panels of `feature_panels`; saved as out/<name>.png."""
  cols = ['image', 'single', 'bilinear', 'SRT', 'SRT variance', '|SRT - single|', '|bilinear - single|']
  fig, axes = plt.subplots(len(images), len(cols), figsize=(1.9 * len(cols), 2.0 * len(images)), squeeze=False)
  for i, img in enumerate(images):
    for j, col in enumerate(cols):
      ax = axes[i, j]
      if col == 'image':
        ax.imshow(np.clip(img, 0, 1) if img.shape[-1] == 3 else img[..., 0], cmap='gray')
      elif panels[i][col].ndim == 2:
        ax.imshow(panels[i][col], cmap='magma')
      else:
        ax.imshow(panels[i][col], interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(col, fontsize=8)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  scaffold.save_figure(fig, out, name, dpi=110)


def boundary_alignment(dist: np.ndarray, image: np.ndarray) -> float:
  """Pearson correlation between a [H, W] map and the image gradient magnitude (finite differences)."""
  gray = image.mean(-1) if image.ndim == 3 else image
  gy, gx = np.gradient(gray)
  g = np.hypot(gy, gx).ravel()
  return float(np.corrcoef(dist.ravel(), g)[0, 1])


def add_arguments(p: argparse.ArgumentParser) -> None:
  """This script's flags (the scaffold adds --out, --workdir, --quick, --set)."""
  p.add_argument('--lite-d', type=int, default=7, help='Lite0 shifts in [-d, d]^2 ...')
  p.add_argument('--lite-step', type=int, default=1, help='... every lite-step pixels')


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """--workdir keeps/reuses the trained ViT checkpoint; --set overrides a configs/srt_classifier.py field."""
  return scaffold.parse_args(__doc__.split('\n\n')[0], argv, default_out='results/srt_visualize',
                             add_arguments=add_arguments, prog='python -m eval.srt_visualize')


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  out = scaffold.prepare_out(args.out)
  t0 = time.time()
  size, photos, lite_offsets, vit_d, n_digits, preset = (
      224, PHOTOS, offsets_grid(args.lite_d, step=args.lite_step), 3, 4, None)
  if args.quick:
    size, photos, lite_offsets, vit_d, n_digits, preset = 96, PHOTOS[1:2], offsets_grid(2, step=2), 1, 2, 'smoke'

  # EfficientNet-Lite0, real ImageNet weights.
  model, variables = efficientnet.load_pretrained()
  raw = np.stack([np.asarray(jax.image.resize(getattr(skimage.data, n)() / 255.0, (size, size, 3), 'linear',
                                              antialias=True)) for n in photos]).astype(np.float32)
  x = np.asarray(efficientnet.normalize(raw))
  lite_panels = feature_panels(efficientnet.features(model, 16), variables, x, lite_offsets)
  plot_grid(raw, lite_panels, out, 'lite0_pca',
            f'EfficientNet-Lite0 (ImageNet), stride-16 features, {len(lite_offsets)} shifts')

  # The ViT trained here on MNIST.
  config = srt_common.classifier_config_for(preset, None, args.set)
  backbone = srt_common.train_backbone(config, args.workdir[0] if args.workdir else None)
  digits = backbone.test_set.images[:n_digits]
  vit_panels = feature_panels(srt_classifier.feature_fn(backbone.model), backbone.variables, digits,
                              offsets_grid(vit_d))
  plot_grid(digits, vit_panels, out, 'vit_pca',
            f'ViT patch {config.vit.patch_size} trained on MNIST, last block, d={vit_d}')

  rows = []
  for name, imgs, panels in (('Lite0', raw, lite_panels), ('ViT', digits, vit_panels)):
    for i, p in enumerate(panels):
      rows.append({'backbone': name, 'image': photos[i] if name == 'Lite0' else f'test digit {i}',
                   'corr(SRT - single, grad)': boundary_alignment(p['|SRT - single|'], imgs[i]),
                   'corr(bilinear - single, grad)': boundary_alignment(p['|bilinear - single|'], imgs[i]),
                   'corr(SRT variance, grad)': boundary_alignment(p['SRT variance'], imgs[i])})
  md = [f'Lite0: {len(photos)} bundled photos at {size}x{size}, stride-16 features (112 ch), '
        f'{len(lite_offsets)} shifts. ViT: {n_digits} MNIST test digits, d={vit_d} '
        f'(test accuracy of the ViT {backbone.test_accuracy:.4f}). Wall time {time.time() - t0:.0f} s.', '',
        'Fig. 4 says the SRT "noise" (distance to the single pass) concentrates on semantic boundaries while '
        'interpolation differences form a grid. As a number, the Pearson correlation of each map (L2 distance '
        'of SRT / bilinear features to the single pass; SRT standard deviation over shifts) with the image '
        'gradient magnitude |grad I| at the same pixel:', '',
        scaffold.markdown_table(rows, list(rows[0])), '',
        '![Lite0](lite0_pca.png)', '', '![ViT](vit_pca.png)', '']
  path = scaffold.write_results(out, 'SRT feature visualisation (Fig. 2, Fig. 4)', ['\n'.join(md)],
                                module='eval.srt_visualize', argv=argv, quick=args.quick)
  scaffold.finish(path, 'figures lite0_pca.png and vit_pca.png')
  return {'rows': rows}


if __name__ == '__main__':
  main()
