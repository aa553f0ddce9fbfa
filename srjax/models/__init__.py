"""Flax linen models. Each module documents its parameter layout and the feature maps it exposes."""
from srjax.models import classifier
from srjax.models import vit
