import os

# Any accidental download fails at once instead of hanging on a closed network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers share the cores: one thread each avoids oversubscription.
    torch.set_num_threads(1)

from hypothesis import HealthCheck, settings  # noqa: E402

# Property-based tests that do not set their own budget (the fuzzers) run a small, fast profile
# by default; HYPOTHESIS_PROFILE=large runs them much longer: `HYPOTHESIS_PROFILE=large python -m
# pytest tests/test_fuzz_api.py`.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("fast", max_examples=30, deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("large", max_examples=1000, deadline=None, suppress_health_check=_SLOW_OK)
from hypothesis import Phase  # noqa: E402

settings.register_profile("noshrink", parent=settings.get_profile("fast"), phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
