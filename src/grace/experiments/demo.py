"""``grace demo``: the whole pipeline on the embedded emoji benchmark (build → ids → shards → trie →
train → eval vs the random baseline), with a CPU ``--quick`` preset and a GPU full preset.

The quick preset is sized to finish in <= 15 minutes on 2 CPU cores (see PRESETS for the choice);
the full preset trains every scheme on all emoji with the SmolLM2 + EfficientNet model.
"""

from __future__ import annotations

import time

from grace.experiments.configs import CONTROLS, DEFAULT_SCHEMES, AblateConfig, DemoConfig
from grace.infer.evaluate import DEFAULT_KS

#: quick: a subset of emoji (900 images: 108 held-out queries, so the intervals mean something), the
#: structured (k-means) scheme, a CPU run of the packaged `tiny-effnet` (a randomly initialised LM) over
#: SmolLM2's word-piece vocabulary: word-level tokens let a small LM learn query → identifier far faster
#: than byte tokens did (measured: byte-level loss stayed at the identifier prior for 600 steps), and since
#: training left-pads and computes logits only on the identifier tail, the 49K-way softmax costs little.
#: Both baselines are scored on the same queries. One process trains at ZeRO stage 0 (~0.27 s/step at
#: 16 + 32 samples on 2 cores), which keeps the preset within 15 minutes; `grace ablate` runs the rest.
#: The identifier head (`output_head=ids`: the softmax over the identifier tokens, in training and decoding)
#: is this preset's default: on emoji with this model, three training seeds each, it kept val R@1 within one
#: seed sd of the full head (4.8 ± 1.8 vs 5.3 ± 1.3; test 5.7 ± 0.5 vs 4.4 ± 0.3), trained 2.1x and decoded
#: 5.5x faster (docs/results/id-head-emoji-seeds.md); `grace ablate` with these settings and
#: `--train-overrides ... output_head=full` trains the full head.
PRESETS = {
    "quick": {"schemes": ["structured"], "limit": 900, "model": "tiny-effnet", "steps": 1650, "nproc": 1,
              "tokenizer": "smollm2", "batch_size_i2id": 16, "batch_size_t2id": 32, "lr": 2e-3, "num_beams": 10,
              "baselines": ["clip_faiss", "late_interaction"],
              "train_overrides": ["max_length=96", "warmup_steps=30", "output_head=ids"]},
    # full (GPU): the pretrained SmolLM2 with its LM frozen (lm_training in smollm2-effnet.json) and lr 1e-3,
    # the best recall per training hour measured on emoji (docs/results/archive/lm-training-emoji600.md).
    "full": {"schemes": list(DEFAULT_SCHEMES), "limit": 0, "model": "smollm2-effnet", "steps": 3000, "nproc": 1,
             "batch_size_i2id": 64, "batch_size_t2id": 64, "lr": 1e-3, "num_beams": 20},
}


def demo_ablate_config(config: DemoConfig) -> AblateConfig:
    """The AblateConfig of a demo run: the preset, with the user's explicit flags on top."""
    preset = dict(PRESETS["quick" if config.quick else "full"])
    if config.schemes:
        preset["schemes"] = list(config.schemes)
    if config.baselines:
        preset["baselines"] = list(config.baselines)
    if config.limit >= 0:
        preset["limit"] = config.limit
    for name in ("model", "steps", "nproc"):
        if getattr(config, name):
            preset[name] = getattr(config, name)
    return AblateConfig(run=config.out, seed=config.seed, protocol=config.protocol, **preset)


def run_demo(config: DemoConfig) -> dict[str, dict]:
    from grace.experiments.ablate import run_ablation

    t0 = time.perf_counter()
    ablate = demo_ablate_config(config)
    print(f"grace demo ({'quick' if config.quick else 'full'} preset): {len(ablate.schemes)} scheme(s) "
          f"{ablate.schemes}, model {ablate.model}, {ablate.steps} steps, emoji limit {ablate.limit or 'all'} "
          f"-> {config.out} (protocol {ablate.protocol})")
    results = run_ablation(ablate)
    random = results["random"]
    n = random["num_queries"]
    print(f"\nHeld-out test queries ({n}), Recall@K in % [95% bootstrap interval] vs the random ranking's "
          f"expectation:")
    for scheme in [*ablate.schemes, *(b for b in [*ablate.baselines, *CONTROLS] if b in results)]:
        res = results[scheme]
        parts = []
        for k in DEFAULT_KS:
            low, high = res.get(f"recall@{k}_ci", (float("nan"), float("nan")))
            parts.append(f"R@{k} {100 * res[f'recall@{k}']:.1f} [{100 * low:.1f}, {100 * high:.1f}] "
                         f"(random {100 * random['expected'][f'recall@{k}']:.1f})")
        print(f"  {scheme:>16}: " + ", ".join(parts))
    print(f"total: {(time.perf_counter() - t0) / 60:.1f} min; results in {config.out}/results/")
    return results
