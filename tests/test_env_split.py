"""envs/train.yml and envs/infer.yml as two venvs made from their dependency lists (conda's channels cannot be
reached here): the train env builds structured ids (faiss k-means) and trains a LoRA model; the infer env, which
has no DeepSpeed, reuses every stage of that run, loads the LoRA export (peft), builds the baselines and writes
the table. The stage scripts name the env they expect when run in the other one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import venv_from_conda_env  # (scripts/ is a folder of scripts, not a package)

from launch_helpers import without_process_group


def test_env_split_requirements_are_the_env_files_pip_lists_with_conda_names_mapped():
    train = venv_from_conda_env.pip_requirements(ROOT / "envs" / "train.yml")
    infer = venv_from_conda_env.pip_requirements(ROOT / "envs" / "infer.yml")
    for lines in (train, infer):
        assert "ninja" in lines and "-c constraints.txt" in lines and "torch==2.13.0" in lines
    assert any(line.startswith("-e ..[") and "train" in line for line in train)
    assert any(line.startswith("-e ..[") and "lora" in line and "baselines" in line for line in infer)
    pins = {line.split("==")[0].lower() for line in (ROOT / "envs" / "constraints.txt").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert {"torch", "transformers", "peft", "faiss-cpu", "numpy", "safetensors"} <= pins


def test_env_split_gpu_env_files_are_the_cpu_ones_with_faiss_gpu():
    for stage in ("train", "infer"):
        cpu = venv_from_conda_env.pip_requirements(ROOT / "envs" / f"{stage}.yml")
        gpu = venv_from_conda_env.pip_requirements(ROOT / "envs" / f"{stage}-gpu.yml")
        assert any("[cpu," in line for line in cpu) and not any("gpu" in line for line in cpu)
        assert gpu == [line.replace("[cpu,", "[gpu,") for line in cpu]


def test_env_split_unknown_conda_package_is_a_one_line_error(tmp_path):
    env = tmp_path / "env.yml"
    env.write_text("name: x\ndependencies:\n  - python=3.11\n  - cudatoolkit=12\n")
    with pytest.raises(SystemExit, match="conda package 'cudatoolkit=12' has no PyPI mapping"):
        venv_from_conda_env.pip_requirements(env)


def _env(python: Path) -> dict:
    # not this pytest process's venv, nor the process group an in-process training here left in os.environ
    env = {k: v for k, v in without_process_group(dict(os.environ)).items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "CONDA_PREFIX")}
    return {**env, "PATH": f"{python.parent}{os.pathsep}{env['PATH']}", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(python: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(python), *args], env=_env(python), capture_output=True, text=True, timeout=1800,
                          cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _has(python: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return _run(python, "-c", code, check=False).returncode == 0


@pytest.mark.slow  # two venvs installed from the pip cache, and a tiny run in each: CI's slow step
def test_env_split_train_in_one_venv_then_evaluate_and_build_baselines_in_the_other(tmp_path):
    from grace.data_process.synthetic import build_synthetic

    train = venv_from_conda_env.make_venv(ROOT / "envs" / "train.yml", tmp_path / "venv-train")
    infer = venv_from_conda_env.make_venv(ROOT / "envs" / "infer.yml", tmp_path / "venv-infer")
    assert all(_has(train, m) for m in ("deepspeed", "peft", "faiss")) and not _has(train, "colbert")
    assert all(_has(infer, m) for m in ("peft", "faiss", "colbert", "fastapi")) and not _has(infer, "deepspeed")

    build_synthetic(tmp_path / "data", n_images=36, test_every=6, val_every=4)
    model = json.loads((ROOT / "src/grace/model/configs/tiny-effnet.json").read_text())
    (tmp_path / "lora.json").write_text(json.dumps({**model, "name": "tiny-effnet-lora", "lm_training": "lora"}))
    run = tmp_path / "run"
    ablate = ["-m", "grace.cli", "ablate", "--run", str(run), "--dataset", str(tmp_path / "data" / "dataset.json"),
              "--schemes", "structured", "--model", str(tmp_path / "lora.json"), "--tokenizer", "byte",
              "--steps", "20", "--num-beams", "4", "--pseudo-query-generator", "knn-captions"]
    _run(train, *ablate, "--baselines", "none")
    trained = run / "ckpt" / "structured" / "export"
    assert (trained / "config.json").is_file()
    stamp = trained.stat().st_mtime_ns
    second = _run(infer, *ablate, "--baselines", "clip_faiss", "late_interaction")
    assert "reused" in second.stdout and trained.stat().st_mtime_ns == stamp  # nothing retrained
    table = json.loads((run / "results" / "ablation.json").read_text())
    assert {"structured", "clip_faiss", "late_interaction", "bm25"} <= set(table)  # the LoRA export loaded

    refused = subprocess.run(["bash", "scripts/train_torchrun.sh", "--help"], env=_env(infer) | {"VENV": "/none"},
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert refused.returncode == 2 and "lacks deepspeed" in refused.stderr and "grace-train" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
