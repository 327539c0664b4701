import os
import tempfile

# Keep compiled-module caches of test runs out of the user's cache.
os.environ.setdefault("NPA_CACHE_DIR", tempfile.mkdtemp(prefix="npa-test-cache-"))
