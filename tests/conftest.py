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
