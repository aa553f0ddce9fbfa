"""Private implementation modules (optax's `_src` convention): import the public names from `srjax.<module>`."""
