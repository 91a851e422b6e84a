#!/usr/bin/env bash
# The recipe ablation of docs/evaluation.md's "Does the tuned Tim behave more like Tim?" table and
# docs/performance.md: one data recipe from synthesis to evaluation, every step timed.
#
#   scripts/recipe_ablation.sh RUN_DIR plain          # today's SFT: one sample per Tim turn, no exemplars
#   scripts/recipe_ablation.sh RUN_DIR best           # exemplars in prompts and training + best of 4, SFT
#   scripts/recipe_ablation.sh RUN_DIR best+dpo       # the same, then DPO from that SFT adapter
#
# Every step uses the configs in configs/ (same probes, seed and probe settings for all); extra
# arguments after the recipe go to `tim synth` (e.g. --max_conversations 64). Wall time of each
# step goes to RUN_DIR/times.txt; the eval reports to RUN_DIR/eval-*/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:?usage: scripts/recipe_ablation.sh RUN_DIR plain|best|best+dpo [synth args]}
recipe=${2:?usage: scripts/recipe_ablation.sh RUN_DIR plain|best|best+dpo [synth args]}
shift 2
tim=.venv/bin/tim
mkdir -p "$run"
step() {  # step NAME COMMAND...: run it, append "NAME seconds" to times.txt
    local name=$1 started
    shift
    started=$(date +%s)
    "$@"
    echo "$name $(( $(date +%s) - started ))" >>"$run/times.txt"
}
{ date -u +%FT%TZ; grep -m1 "model name" /proc/cpuinfo; grep -m1 -o "avx512[a-z_0-9]*" /proc/cpuinfo | sort -u | tr '\n' ' '; echo; } >"$run/machine.txt"
grep -m1 flags /proc/cpuinfo >>"$run/machine.txt"

case $recipe in
    plain) synth=(--tim_candidates 1 --exemplars_in_prompt 0 --exemplars_in_train 0) ;;
    best | best+dpo) synth=() ;;
    *) echo "unknown recipe '$recipe' (plain | best | best+dpo)" >&2; exit 2 ;;
esac
step synth $tim synth --config configs/synth.yaml --output_dir "$run/data" --overwrite true "${synth[@]}" "$@"
step sft $tim train --config configs/sft.yaml --dataset_dir "$run/data" --output_dir "$run/sft"
step eval-sft $tim eval --config configs/eval.yaml --adapter "$run/sft" --dataset_dir "$run/data" --output_dir "$run/eval-sft"
if [ "$recipe" = best+dpo ]; then
    step dpo $tim dpo --config configs/dpo.yaml --preference_dir "$run/data" --sft_adapter "$run/sft" --output_dir "$run/dpo"
    step eval-dpo $tim eval --config configs/eval.yaml --adapter "$run/dpo" --dataset_dir "$run/data" \
        --compare_base false --output_dir "$run/eval-dpo"
fi
cat "$run/times.txt"
