#!/usr/bin/env bash
# A two-node Ray cluster on this machine (head + worker on loopback, started with `ray start`), and a
# 2-seed tiny `ostr-ray launch --address ...` against it with storage on a path both nodes share.
# This is the scale-out path of the README (ray up -> launch --address auto) with the cloud taken out.
#
#   scripts/local_multinode.sh [STORAGE_DIR]
#
# Exits non-zero if the launch fails or a seed did not finish; always stops the cluster it started.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
STORAGE=${1:-$(mktemp -d)/shared_storage}
PORT=${OSTR_HEAD_PORT:-$((20000 + RANDOM % 20000))}
export RAY_TMPDIR=$(mktemp -d /tmp/rmn.XXXX)   # its own session dir: never joins another Ray on this box
# Ray >= 2.59 starts local clusters with token authentication: every node and driver needs the token.
export RAY_AUTH_MODE=token
"$BIN/ray" get-auth-token --generate >/dev/null   # creates ~/.ray/auth_token only if missing
mkdir -p "$STORAGE"

# Stop only this cluster's processes (`ray stop` would stop every Ray on the machine).
cleanup() { pkill -f -- "$RAY_TMPDIR" >/dev/null 2>&1 || true; sleep 1; pkill -9 -f -- "$RAY_TMPDIR" >/dev/null 2>&1 || true; }
trap cleanup EXIT

"$BIN/ray" start --head --node-ip-address 127.0.0.1 --port "$PORT" --num-cpus 1 \
  --include-dashboard false --temp-dir "$RAY_TMPDIR" --disable-usage-stats >/dev/null
"$BIN/ray" start --address "127.0.0.1:$PORT" --node-ip-address 127.0.0.1 --num-cpus 1 \
  --temp-dir "$RAY_TMPDIR" --disable-usage-stats >/dev/null
nodes=$("$BIN/python" - "$PORT" <<'PY'
import sys, ray
ray.init(address=f"127.0.0.1:{sys.argv[1]}", logging_level="ERROR", log_to_driver=False)
print(len([n for n in ray.nodes() if n["Alive"]]))
PY
)
echo "alive Ray nodes: $nodes"
[ "$nodes" -ge 2 ] || { echo "expected 2 nodes, got $nodes" >&2; exit 1; }

# --address auto finds the cluster through RAY_ADDRESS (as on a `ray up` head node, where Ray sets it up)
RAY_ADDRESS="127.0.0.1:$PORT" "$BIN/ostr-ray" launch --address auto --preset demo --seeds 2 --cpus-per-trial 1 \
  --storage "$STORAGE" --name multinode --quiet --json \
  --set dataset=synthetic --set image_size=8 --set "space_kwargs={C: 4, N: 1}" \
  --set train_size=64 --set val_size=64 --set batch_size=16 --set epochs=2 --set patience=0 \
  > "$STORAGE/launch_out.json"

"$BIN/python" - "$STORAGE/launch_out.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
seeds = report["variants"]["demo"]["seeds"]
assert sorted(seeds) == ["0", "1"], seeds
assert all(s["status"] == "finished" and s["last_epoch"] == 2 for s in seeds.values()), seeds
print("multi-node launch OK:", {k: v["genotypes"]["ostr"] for k, v in seeds.items()})
PY
