#!/usr/bin/env bash
# One short GPU check of the GPT path (<= 4 min on one GPU): the Trainer's bf16 autocast + torch.compile and
# fp32 without compile on the recommended char preset, then KV-cache generation on CUDA (cached == uncached).
# Run from anywhere: bash benchmarks/gpu_check.sh   (uses $PYTHON or python3; needs torch with CUDA, click, pyyaml,
# safetensors, tokenizers, tqdm, tensorboard; lmlab is taken from src/).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
DATA=src/lmlab/assets/tinyshakespeare.txt.gz
W="${GPU_CHECK_DIR:-/tmp/lmlab-gpu-check}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
for mode in "precision=bf16 compile=true" "precision=fp32 compile=false"; do
  echo "== train char preset on GPU: $mode"
  start=$(date +%s)
  "$PY" -m lmlab gpt train --data "$DATA" --preset char --out "$W/run" --overwrite device=cuda \
      max_steps=600 eval_every=300 save_every=300 log_every=100 progress=true $mode
  echo "wall $(( $(date +%s) - start )) s"
  tail -n 3 "$W/run/metrics.jsonl"
done
echo "== generate on CUDA"
"$PY" -m lmlab gpt generate "$W/run" --prompt "ROMEO:" -n 200 --seed 1 --device cuda
"$PY" - "$W/run" <<'PY'
import sys, time, torch
from lmlab.generation import SamplingConfig
from lmlab.models.gpt import GPT, GPTConfig
from lmlab.recipes.gpt import GPTRecipe
model, codec, run = GPTRecipe.load_model(sys.argv[1], device="cuda")
prompt = torch.tensor([codec.encode("ROMEO:")], device="cuda")
cfg = SamplingConfig(max_new_tokens=100, temperature=0)
a = model.generate(prompt, cfg, use_cache=True); b = model.generate(prompt, cfg, use_cache=False)
print("cuda greedy cached == uncached:", a == b)
with torch.autocast("cuda", dtype=torch.bfloat16):
    c = model.generate(prompt, cfg, use_cache=True)
print("bf16 autocast generation ran:", len(c[0]) == 100)
big = GPT(GPTConfig(vocab_size=65, block_size=1024, embed_dim=384, num_layers=6, num_heads=6)).cuda().eval()
p = torch.tensor([[1]], device="cuda")
for use_cache in (True, False):
    big.generate(p, SamplingConfig(max_new_tokens=16, temperature=0), use_cache=use_cache)
    torch.cuda.synchronize(); t = time.perf_counter()
    big.generate(p, SamplingConfig(max_new_tokens=1023, temperature=0), use_cache=use_cache)
    torch.cuda.synchronize(); print(f"1024 tokens, 6x384 model, cache={use_cache}: {1023 / (time.perf_counter() - t):.0f} tok/s")
PY
echo "GPU CHECK DONE"
