"""Flax linen models. Each module documents its parameter layout and the feature maps it exposes."""
from srjax.models import classifier
from srjax.models import convnext
from srjax.models import efficientnet
from srjax.models import resnet
from srjax.models import torch_pickle
from srjax.models import vit
