import os

# Tests run on CPU with a deterministic, single-device setup unless a test asks otherwise.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
