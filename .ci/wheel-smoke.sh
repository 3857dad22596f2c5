#!/usr/bin/env bash
# Wheel smoke test: build lmlab's wheel, install it into a fresh virtual environment OUTSIDE the repository (no
# --system-site-packages, no editable install, no PYTHONPATH) and run, from a folder outside the repository, a
# command that needs a shipped preset: a 5-step `lmlab classify train --preset bilstm`, then `classify predict`.
# It fails loudly if a preset, the bundled data, the server's static files or a compiled kernel did not ship.
#
# Usage (from anywhere): bash .ci/wheel-smoke.sh   (PY=python to build with: default .venv/bin/python, which has
# the `build` package from the dev extra). Takes about 5 minutes on 2 cores: 1 to build (the Cython kernels),
# 2-3 to install torch and the wheel's dependencies into the new venv, 1 to train, predict and clean up.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$REPO/.venv/bin/python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/lmlab-wheel-smoke.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
t0=$SECONDS
say() { echo "wheel-smoke [$((SECONDS - t0)) s]: $*"; }

say "building the wheel (python -m build --wheel) into $WORK/dist"
# LMLAB_PORTABLE=1: no -march=native, as a wheel meant for other machines is built
(cd "$REPO" && LMLAB_PORTABLE=1 "$PY" -m build --wheel --outdir "$WORK/dist" >"$WORK/build.log" 2>&1) || {
  tail -40 "$WORK/build.log"; echo "wheel-smoke: FAILED to build the wheel" >&2; exit 1; }
WHEEL="$(ls "$WORK"/dist/lmlab-*.whl)"
say "built $(basename "$WHEEL")"

# What must be inside the wheel: every preset in the source tree, the bundled data, the server's page, the three kernels.
"$PY" - "$WHEEL" "$REPO/src/lmlab" <<'EOF'
import sys, zipfile
from pathlib import Path
wheel, src = sys.argv[1], Path(sys.argv[2])
names = set(zipfile.ZipFile(wheel).namelist())
want = [f"lmlab/{p.relative_to(src).as_posix()}" for pattern in ("configs/*/*.yaml", "assets/*", "serve_static/*")
        for p in sorted(src.glob(pattern)) if p.is_file()]
missing = [n for n in want if n not in names]
for kernel in ("_w2v_kernels", "_glove_kernels", "_bf16_kernels"):
    if not any(n.startswith(f"lmlab/models/{kernel}.") and n.endswith((".so", ".pyd")) for n in names):
        missing.append(f"lmlab/models/{kernel}.*.so")
if missing:
    sys.exit("wheel-smoke: FAILED: the wheel lacks:\n  " + "\n  ".join(missing))
print(f"wheel-smoke: the wheel holds all {len(want)} presets/assets/static files and the three kernels")
EOF

say "creating a fresh venv in $WORK/venv"
"$PY" -m venv "$WORK/venv"   # the interpreter of the build venv; a venv made from it sees no site-packages
VPY="$WORK/venv/bin/python"
# the pinned CPU torch first: a bare `torch` requirement would pull a multi-GB CUDA build
pipi() { "$VPY" -m pip install -q "$@" >>"$WORK/pip.log" 2>&1 || {
  tail -40 "$WORK/pip.log"; echo "wheel-smoke: FAILED: pip install $*" >&2; exit 1; }; }
pipi torch==2.13.0
pipi "$WHEEL"
say "installed torch and the wheel"

cd "$WORK"                   # outside the repository: nothing can be imported from its src/ or read from configs/
unset PYTHONPATH
"$VPY" - "$REPO" <<'EOF'
import sys
from importlib import resources
from pathlib import Path
import lmlab, lmlab.config
from lmlab.models import _bf16_kernels, _glove_kernels, _w2v_kernels  # noqa: F401  (ImportError = a kernel did not ship)
repo = Path(sys.argv[1]).resolve()
where = Path(lmlab.__file__).resolve()
if where.is_relative_to(repo):
    sys.exit(f"wheel-smoke: FAILED: lmlab was imported from the repository ({where}), not from the wheel")
for family in ("classify", "lm", "gpt", "seq2seq", "gan"):
    if not lmlab.config.list_presets(family):
        sys.exit(f"wheel-smoke: FAILED: no {family} presets in the installed package")
for folder in ("assets", "serve_static"):
    if not any(resources.files("lmlab").joinpath(folder).iterdir()):
        sys.exit(f"wheel-smoke: FAILED: lmlab/{folder} is empty in the installed package")
print(f"wheel-smoke: lmlab imported from {where.parent}; kernels, presets, assets and static files present")
EOF

cat >"$WORK/tiny.jsonl" <<'EOF'
{"text": "a wonderful, moving film with great acting", "label": "pos"}
{"text": "i loved every minute of it, a delight", "label": "pos"}
{"text": "brilliant and funny, the best film this year", "label": "pos"}
{"text": "great story and a great cast", "label": "pos"}
{"text": "a warm, clever and beautiful movie", "label": "pos"}
{"text": "fun from start to finish, loved it", "label": "pos"}
{"text": "a dull, boring mess with bad acting", "label": "neg"}
{"text": "i hated it, a waste of two hours", "label": "neg"}
{"text": "awful script and a terrible cast", "label": "neg"}
{"text": "boring and stupid, the worst film this year", "label": "neg"}
{"text": "a bad movie, badly made and badly acted", "label": "neg"}
{"text": "tedious from start to finish, hated it", "label": "neg"}
EOF
"$WORK/venv/bin/lmlab" classify train --preset bilstm --data tiny.jsonl --out r \
  train.max_steps=5 train.batch_size=4 train.num_threads=1 data.min_freq=1 data.val_split=0.25
test -f r/config.json && test -f r/model.safetensors || { echo "wheel-smoke: FAILED: no run directory r/" >&2; exit 1; }
out="$("$WORK/venv/bin/lmlab" classify predict r "a great film")"
echo "$out"
case "$out" in pos$'\t'*|neg$'\t'*) ;; *) echo "wheel-smoke: FAILED: unexpected prediction output" >&2; exit 1 ;; esac
say "passed"
