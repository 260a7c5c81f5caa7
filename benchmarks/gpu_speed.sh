#!/usr/bin/env bash
# The GPU speed reports of docs/benchmarks.md ("GPU"), regenerated in one command:
#
#     benchmarks/gpu_speed.sh OUT_DIR [eager|losses|compiled|graphs|scale|scale-graphs|syncbn|all]
#
# `vidssl bench speed` on CUDA in bf16 autocast and channels-last, eager, with torch.compile and
# with torch.compile's CUDA graphs (`graphs`: --compile-mode reduce-overhead),
# on the laptop configs (tiny networks, 32 px) and at 112 px (ResNet-18 for the frame methods,
# R3D-18 for the clip methods, 8 loader workers), plus benchmarks/gpu_syncs.py; `losses`: every
# classification-shaped loss compiled against eager (benchmarks/compile_losses.py); `scale`: larger
# batches (ResNet-18 at 112 px, batch 128 for the frame methods; R3D-18 at 112 px, batch 32 for the clip
# methods) and ResNet-50 at 224 px;
# `scale-graphs`: the same with CUDA graphs (ResNet-50 only with SIZES=224); `syncbn`:
# benchmarks/sync_bn_check.py on every GPU (model.sync_bn's statistics are the global batch's).
# Every invocation (compiled: one per method) runs under its own time limit (LIMIT seconds,
# default 300) and leaves its report in OUT_DIR/NAME/speed.md, its log in OUT_DIR/NAME.log; the
# archive PACK (default OUT_DIR/reports.tar.gz) of all of them is refreshed after each, so a
# cut-off session keeps what finished. PYTHON picks the interpreter (default python3), STEPS the
# timed steps (default 20); for the compiled parts, METHODS picks methods (default all seven, comma
# separated) and SIZES the configs (default "laptop 112").
set -uo pipefail
out=${1:?usage: benchmarks/gpu_speed.sh OUT_DIR [eager|losses|compiled|graphs|scale|scale-graphs|syncbn|all]}
part=${2:-all}
py=${PYTHON:-python3}
limit=${LIMIT:-300}
steps=${STEPS:-20}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

frames=seco,moco,vclr
clips=corp_f,corp_m,simclr,mlfo
picked=,${METHODS:-$frames,$clips},
sizes=${SIZES:-laptop 112}
at112=(augment.size=112 data.synthetic_size=112 data.num_workers=8)

pack=${PACK:-$out/reports.tar.gz}
pack() { tar -C "$out" -czf "$pack.tmp" --exclude="$(basename "$pack")*" . && mv "$pack.tmp" "$pack"; }

speed() {  # NAME [bench speed arguments...]
  local name=$1; shift
  echo "== $name: bench speed $*"
  timeout "$limit" "$py" -m vidssl.cli bench speed --device cuda --amp --channels-last --steps "$steps" \
    --out "$out/$name" "$@" 2>&1 | tee "$out/$name.log"
  pack
}

if [[ $part == eager || $part == all ]]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/device.txt"
  "$py" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" \
    | tee -a "$out/device.txt"
  timeout "$limit" "$py" benchmarks/gpu_syncs.py 2>&1 | tee "$out/gpu_syncs.txt"
  pack
  speed laptop_bf16_cl --loader-batches 8 --workers 0,2,8
  speed resnet18_112px_bf16_cl --methods $frames --loader-batches 16 --workers 2,8,14 model.arch=resnet18 "${at112[@]}"
  speed r3d18_112px_bf16_cl --methods $clips --loader-batches 16 --workers 2,8,14 model.arch=r3d_18 "${at112[@]}"
fi
if [[ $part == losses || $part == all ]]; then  # Triton compiles every loss (a failure names the loss)
  timeout "$limit" "$py" benchmarks/compile_losses.py 2>&1 | tee "$out/compile_losses.txt"
  pack
fi
compiled() {  # TAG COMPILE-ARGUMENTS...: one method per invocation (each compiles for a minute or more)
  local tag=$1; shift
  if [[ " $sizes " == *" laptop "* ]]; then
    for m in ${frames//,/ } ${clips//,/ }; do
      [[ $picked == *,$m,* ]] && speed laptop_bf16_cl_${tag}_$m "$@" --methods $m --loader-batches 2 --workers 0
    done
  fi
  [[ " $sizes " == *" 112 "* ]] || return 0
  for m in ${frames//,/ }; do
    [[ $picked == *,$m,* ]] && speed resnet18_112px_bf16_cl_${tag}_$m "$@" --methods $m --loader-batches 2 \
      --workers 0 model.arch=resnet18 "${at112[@]}"
  done
  for m in ${clips//,/ }; do
    [[ $picked == *,$m,* ]] && speed r3d18_112px_bf16_cl_${tag}_$m "$@" --methods $m --loader-batches 2 \
      --workers 0 model.arch=r3d_18 "${at112[@]}"
  done
  return 0
}
if [[ $part == compiled || $part == all ]]; then
  compiled compile --compile
fi
if [[ $part == graphs || $part == all ]]; then  # compiled, and each graph replayed as a CUDA graph
  compiled graphs --compile-mode reduce-overhead
fi
scale() {  # TAG [bench speed arguments...]: larger batches and inputs
  local tag=$1; shift
  for m in ${frames//,/ }; do
    [[ $picked == *,$m,* ]] || continue
    queues=("$m.queue_size=4096")  # raised to hold the larger batches' keys
    [[ $m == vclr ]] && queues+=(vclr.video_queue_size=1024)
    speed scale_resnet18_112px_b128_$tag$m "$@" --methods $m --loader-batches 2 --workers 8 model.arch=resnet18 \
      "${at112[@]}" train.batch_size=128 "${queues[@]}"
    [[ " $sizes " == *" 224 "* ]] && speed scale_resnet50_224px_b64_$tag$m "$@" --methods $m --loader-batches 1 \
      --workers 8 model.arch=resnet50 augment.size=224 data.synthetic_size=224 data.num_workers=8 \
      train.batch_size=64 "${queues[@]}"
  done
  for m in ${clips//,/ }; do
    [[ $picked == *,$m,* ]] && speed scale_r3d18_112px_b32_$tag$m "$@" --methods $m --loader-batches 2 \
      --workers 8 model.arch=r3d_18 "${at112[@]}" train.batch_size=32
  done
  return 0
}
if [[ $part == scale || $part == all ]]; then
  SIZES=${SIZES:-laptop 112 224}; sizes=$SIZES scale ""
fi
if [[ $part == scale-graphs || $part == all ]]; then  # the same with CUDA graphs (ResNet-50: SIZES=224)
  scale graphs_ --compile-mode reduce-overhead
fi
if [[ $part == syncbn || $part == all ]]; then  # model.sync_bn: global-batch statistics on every GPU
  gpus=$(nvidia-smi --list-gpus | wc -l)
  timeout "$limit" "$py" -m torch.distributed.run --nproc_per_node "$gpus" benchmarks/sync_bn_check.py 2>&1 \
    | tee "$out/sync_bn.txt"
  pack
fi
