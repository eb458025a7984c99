import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "offline")
# Ray reads its authentication mode once per process, at import: the suite's own Ray runs with token auth whatever
# the caller's RAY_AUTH_MODE says; test_exposure.py starts processes with RAY_AUTH_MODE=disabled on purpose.
os.environ["RAY_AUTH_MODE"] = "token"


def pytest_configure(config):
    for marker in ("slow: uses the real packaged gemma model (seconds to a minute)",
                   "integration: real Ray actor graph",
                   "browser: real headless Chromium",
                   "vllm: the vLLM engine on CPU in its own virtualenv (.venv-vllm)",
                   "gpu: needs a CUDA GPU (skipped without one)"):
        config.addinivalue_line("markers", marker)
