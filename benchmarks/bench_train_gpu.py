"""GPU training benchmark: the openflamingo-3b-shaped model (ViT-L/14 + 1B MPT LM, random init) under
DeepSpeed ZeRO-3 bf16 (``--zero-stage``), using the same DeepSpeed config and batch assembly as ``grace train``.

Reports samples/s, tokens/s, peak GPU memory and MFU. Model FLOPs per step count each part where it runs:

- trainable LM-side weights (cross-attention, embeddings, unfrozen LM): 6 per parameter per text token
  (forward 2, backward 4: input and weight gradients);
- frozen LM weights: 4 per parameter per text token (forward 2, plus the input gradient that must flow
  back through them to the cross-attention layers below; no weight gradient);
- the perceiver (trainable): 6 per parameter per (visual token + latent), once per sample's image
  (t2id samples run it over the null image);
- the frozen vision tower: 2 per parameter per *patch token of each image* (forward only, once per
  image, over its own tokens — not over text tokens);
- attention scores: 12 × layers × d_model × seq_len per text token (forward + backward).

divided by the GPUs' peak (default 790 TFLOP/s per GPU, H100/H200 dense bf16; set --peak-tflops).

    torchrun --nproc_per_node 8 benchmarks/bench_train_gpu.py --steps 60 --batch-size 16 --out bench.json
    python benchmarks/bench_train_gpu.py --model tiny --device cpu --steps 3 --warmup 1   # smoke test

Random token ids stand in for identifier prompts (same length as GRACE's); half of each batch gets
random image features (i2id), half the null image (t2id). When ``open_clip`` is installed the frozen
ViT-L/14 tower (random init) encodes random pixels each step, as in real training without a cache;
otherwise random (B, 256, 1024) features stand in for it (--no-vision-encoder forces this).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="openflamingo-3b", help="grace.model config name or JSON")
    p.add_argument("--steps", type=int, default=60, help="timed + warm-up steps (>= 50 for the report)")
    p.add_argument("--warmup", type=int, default=10, help="steps excluded from the timing")
    p.add_argument("--batch-size", type=int, default=16, help="micro batch per GPU (half i2id, half t2id)")
    p.add_argument("--seq-len", type=int, default=32, help="text tokens per sample")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--no-vision-encoder", action="store_true", help="random features instead of the ViT")
    p.add_argument("--deepspeed-config", type=Path, default=None, help="override the packaged ZeRO-3 JSON")
    p.add_argument("--zero-stage", type=int, default=3, choices=[-1, 0, 1, 2, 3],
                   help="ZeRO stage (-1: grace train's default, 3 across processes and 0 for one)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--peak-tflops", type=float, default=790.0, help="peak bf16 TFLOP/s per GPU for MFU")
    p.add_argument("--vocab-size", type=int, default=50280)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def _vision_encoder(config, device: str, disabled: bool):
    """Random-init open_clip ViT tower matching the config's vision encoder, or None."""
    name = config.vision_encoder or ""
    if disabled or not name.startswith("open_clip_tokens:"):
        return None
    try:
        import open_clip
    except ImportError:
        print("open_clip not installed: random features stand in for the ViT", file=sys.stderr)
        return None
    arch = name.removeprefix("open_clip_tokens:").partition("/")[0]
    visual = open_clip.create_model(arch, pretrained=None).visual
    visual.output_tokens = True
    return visual.to(device).eval().requires_grad_(False)


def _patch_tokens(encoder) -> int:
    """Tokens the vision tower runs over per image (patches + class token for an open_clip ViT)."""
    grid = getattr(encoder, "grid_size", None)
    if grid is None:
        return 0
    return int(grid[0] * grid[1]) + 1


def main(argv: list[str] | None = None) -> dict:
    import deepspeed
    import torch
    import torch.distributed as dist

    from grace.model import create_model
    from grace.model.config import resolve_config
    from grace.train import engine as E
    from grace.train.trainer import vision_batch

    args = _args(argv)
    device = E.resolve_device(args.device)
    rank, world, local_rank = E.init_deepspeed(device)
    dev = f"cuda:{local_rank}" if device == "cuda" else "cpu"
    torch.manual_seed(0)
    config = resolve_config(args.model)
    tok = SimpleNamespace(image_token_id=args.vocab_size - 3, eoc_token_id=args.vocab_size - 2,
                          pad_token_id=args.vocab_size - 1)
    model = create_model(args.model, pretrained_lm=False, vision_encoder=None, vocab_size=args.vocab_size,
                         image_token_id=tok.image_token_id, eoc_token_id=tok.eoc_token_id,
                         pad_token_id=tok.pad_token_id)
    encoder = _vision_encoder(config, dev, args.no_vision_encoder)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    n_perceiver = sum(p.numel() for p in model.perceiver.parameters())
    n_vit = sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0
    vit_tokens = _patch_tokens(encoder) if encoder is not None else 0
    lm_cfg = model.lang_encoder.config.get_text_config()
    n_layers, d_model = lm_cfg.num_hidden_layers, lm_cfg.hidden_size

    half = args.batch_size // 2
    cfg = SimpleNamespace(deepspeed_config=args.deepspeed_config, zero_stage=args.zero_stage, batch_size_i2id=half,
                          batch_size_t2id=args.batch_size - half, grad_accum=args.grad_accum, lr=1e-4,
                          weight_decay=0.0, warmup_steps=5, steps=args.steps)
    ds_config = E.deepspeed_config(cfg, device, world)
    dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
    engine, *_ = deepspeed.initialize(model=model, model_parameters=E.trainable_parameters(model), config=ds_config)
    engine.train()

    class RandomFeatures:  # the VisionSource interface of grace.train.data
        def features(self, samples):
            if encoder is not None:
                size = encoder.image_size[0] if isinstance(encoder.image_size, tuple) else encoder.image_size
                with torch.no_grad():
                    return encoder(torch.randn(len(samples), 3, size, size, device=dev))[1].float()
            return torch.randn(len(samples), config.n_visual_tokens, config.vis_dim)

    gen = torch.Generator().manual_seed(rank)
    times = []
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.grad_accum):
            lang_x = torch.randint(0, args.vocab_size - 3, (args.batch_size, args.seq_len), generator=gen)
            lang_x[:, 0] = tok.image_token_id
            labels = lang_x.clone()
            labels[:, : args.seq_len // 2] = -100  # loss on the identifier half, as in GRACE
            feats = vision_batch(engine.module, RandomFeatures(), [None] * half, args.batch_size, dev, dtype)
            out = engine(lang_x=lang_x.to(dev), attention_mask=torch.ones_like(lang_x).to(dev),
                         vision_features=feats, labels=labels.to(dev))
            engine.backward(out.loss)
            engine.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step + 1}/{args.steps} loss {out.loss.item():.4f} {times[-1]:.3f} s", flush=True)

    timed = times[args.warmup:] or times
    sec = sum(timed) / len(timed)
    samples = args.batch_size * args.grad_accum * world
    text_tokens = samples * args.seq_len
    images = half * args.grad_accum * world  # i2id images through the vision tower per step
    flops = (6 * (n_trainable - n_perceiver) * text_tokens + 4 * n_frozen * text_tokens
             + 6 * n_perceiver * (config.n_visual_tokens + config.perceiver_latents) * samples
             + 2 * n_vit * vit_tokens * images + 12 * n_layers * d_model * args.seq_len * text_tokens)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    result = {"model": args.model, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
              "world_size": world, "micro_batch": args.batch_size, "grad_accum": args.grad_accum,
              "seq_len": args.seq_len, "steps": args.steps, "timed_steps": len(timed), "seconds_per_step": sec,
              "samples_per_s": samples / sec, "tokens_per_s": text_tokens / sec, "peak_memory_gib": peak,
              "params_trainable": n_trainable, "params_perceiver": n_perceiver, "params_frozen_lm": n_frozen,
              "params_vision": n_vit, "vision_patch_tokens": vit_tokens,
              "vision_encoder": "open_clip ViT (random init)" if encoder is not None else "random features",
              "model_tflops_per_step": flops / 1e12,
              "mfu": flops / sec / (args.peak_tflops * 1e12 * world), "peak_tflops_per_gpu": args.peak_tflops,
              "bf16": dtype == torch.bfloat16, "gradient_checkpointing": args.gradient_checkpointing}
    if rank == 0:
        print(json.dumps(result, indent=2))
        if args.out:
            from grace.io_utils import write_json

            write_json(args.out, result)
    dist.barrier()
    return result


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
