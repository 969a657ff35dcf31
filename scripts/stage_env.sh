# Sourced by the stage scripts (train_torchrun.sh, eval_torchrun.sh): use_env ENV MODULE... picks the Python
# environment and checks that the stage's modules are in it. Inside a conda env or an active venv, that
# environment is used; otherwise ${VENV:-.venv} is activated when it exists. A missing module stops the script
# with one line naming the env the stage expects (envs/train.yml → grace-train, envs/infer.yml → grace-infer).
use_env() {
  local expected=$1
  shift
  if [[ -z "${CONDA_PREFIX:-}" && -z "${VIRTUAL_ENV:-}" && -f "${VENV:-.venv}/bin/activate" ]]; then
    . "${VENV:-.venv}/bin/activate"
  fi
  local missing
  if ! missing=$(python -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' "$@"); then
    echo "$(basename "$0"): no working python here: activate $expected (envs/${expected#grace-}.yml) or make .venv" >&2
    exit 2
  fi
  if [[ -n "$missing" ]]; then
    echo "$(basename "$0"): this environment ($(python -c 'import sys; print(sys.prefix)')) lacks $missing:" \
      "run it in $expected (conda env create -f envs/${expected#grace-}.yml; conda activate $expected)" >&2
    exit 2
  fi
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
}
