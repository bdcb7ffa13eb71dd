#!/usr/bin/env bash
# Fetch the wheels the offline GPU machine lacks (its image has Python 3.12, torch and transformers with
# their own dependencies: numpy, pillow, huggingface-hub, tokenizers, regex, requests, filelock, tqdm,
# packaging), plus dermgen's own wheel, grouped so each group fits a 64 MiB transfer:
#
#   core   dermgen, diffusers (+ importlib_metadata, zipp; needs safetensors >= 0.8), pydantic (+ pydantic-core,
#          annotated-types, typing-inspection, typing-extensions >= 4.16 that pydantic 2.14 needs), peft
#          (+ accelerate, psutil, pyyaml), safetensors                                          ~12 MB
#   arrow  pyarrow (shards)                                                                      ~55 MB
#   cv     opencv-python-headless (the default filter's scorers)                                 ~64 MB
#   bnb    bitsandbytes (8-bit AdamW for LoRA training)                                          ~43 MB
#
# Run it where pip reaches the registry:
#
#   bash benchmarks/device_wheels.sh [DEST] [GROUP...]     # default: .whl, all groups -> .whl/<group>/
#
# then on the GPU machine install each group offline into one folder and put it first on the path
# (BENCHMARKS.md has the exact commands):
#
#   python3 -m pip install -q --no-index --no-deps --target .site .whl/core/*.whl
#   PYTHONPATH=$PWD/.site python3 benchmarks/gpu_smoke.py
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dest=$(realpath -m "${1:-$repo/.whl}")
shift || true
groups=("$@")
[ ${#groups[@]} -eq 0 ] && groups=(core arrow cv bnb)
py=${DEVICE_PYTHON_VERSION:-3.12}
python=${PYTHON:-python3}

download() {  # download GROUP PACKAGE...
  local dir="$dest/$1"
  shift
  mkdir -p "$dir"
  "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir" "$@"
}

for group in "${groups[@]}"; do
  case "$group" in
    core)
      download core \
        diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2 safetensors==0.8.0 \
        pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
        typing_extensions==4.16.0 \
        peft==0.21.2 accelerate==1.16.0 psutil==7.2.2 pyyaml==6.0.4
      # dermgen itself (pure Python, with its packaged configs)
      "$python" -m pip wheel -q --no-deps --no-build-isolation -w "$dest/core" "$repo"
      ;;
    arrow) download arrow pyarrow==26.0.1 ;;
    cv) download cv opencv-python-headless==5.1.0.95 ;;
    bnb) download bnb bitsandbytes==0.50.2 ;;
    *) echo "unknown group $group (expected core, arrow, cv, bnb)" >&2; exit 2 ;;
  esac
done
du -sh "$dest"/* | sed "s|$dest/||"
