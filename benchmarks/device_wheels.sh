#!/usr/bin/env bash
# Fetch the wheels benchmarks/gpu_throughput.py needs beyond a stock PyTorch GPU image (Python 3.12,
# x86-64): diffusers and pydantic with their small dependencies. Run it here, where pip reaches the
# registry; the GPU machine then installs them offline:
#
#   bash benchmarks/device_wheels.sh            # -> .whl/
#   # on the GPU machine (carry .whl):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl \
#     && PYTHONPATH=/tmp/site python3 benchmarks/gpu_throughput.py
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
py=${DEVICE_PYTHON_VERSION:-3.12}
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest" \
  diffusers==0.42.1 importlib_metadata==10.2.0 \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
ls -1 "$dest"
