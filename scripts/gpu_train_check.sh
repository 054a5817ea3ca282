#!/usr/bin/env bash
# One device call for the GPU comparison (docs/benchmarks.md, "GPU"): nanoGPT's shakespeare-char
# GPU config vs experiment=shakespeare_gpu (the same run) and shakespeare_gpu_fast, every final
# model scored by one evaluator on the whole val split; then a short run over each GPU path
# (bf16 autocast, torch.compile, fused AdamW, the flash provider, CUDA memory and tokens/s).
# Everything lands under $OUT (default: ./gpu_check_out).
#
#   bash scripts/gpu_train_check.sh                 # on the GPU machine, ~8 min with SCALE=0.5
#   SCALE=1 bash scripts/gpu_train_check.sh         # full length (5000 nanoGPT iterations)
#   REHEARSE=1 bash scripts/gpu_train_check.sh      # the same plumbing on a CPU, tiny and short
#
# hydra-core, omegaconf and antlr4 travel as wheels in .whl/ where the machine lacks them
# (the device README): they are installed into /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
SCALE=${SCALE:-0.5}
PY=${PY:-python3}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export APT_SHAKESPEARE=${APT_SHAKESPEARE:-$PWD/../shared/data/tinyshakespeare.txt}
{ nvidia-smi || echo "no nvidia-smi"; } > "$OUT/card.txt" 2>&1
"$PY" -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" | tee "$OUT/versions.txt"

if [ -n "${REHEARSE:-}" ]; then
    LENGTH=(--rehearse --steps 3)
    PATHS=(trainer.device=cpu trainer.precision=fp32 trainer.compile=false)
else
    LENGTH=(--scale "$SCALE")
    PATHS=(trainer.device=cuda trainer.precision=bf16 trainer.compile=true optim.fused=true
           provider/attention=flash)
fi
echo "== nanoGPT vs shakespeare_gpu vs shakespeare_gpu_fast" | tee "$OUT/bench.txt"
"$PY" scripts/bench_nanogpt.py --gpu --pairs 1 "${LENGTH[@]}" --workdir "$OUT/bench" \
    --json "$OUT/bench.json" 2>&1 | tee -a "$OUT/bench.txt"

echo "== GPU paths: ${PATHS[*]}" | tee "$OUT/paths.txt"
"$PY" train.py model=tiny data=synthetic trainer.max_steps=30 trainer.log_every=10 trainer.eval_every=30 \
    plugin=[throughput] plugin.throughput.every_n_steps=5 "${PATHS[@]}" hydra.run.dir="$OUT/paths" \
    trainer.progress=false 2>&1 | tee -a "$OUT/paths.txt"
grep -h "summary:" "$OUT/paths/train.log"
