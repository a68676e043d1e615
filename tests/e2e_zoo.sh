#!/usr/bin/env bash
# e2e_zoo.sh: the sparse Llama-family checkpoints people run, each as a tiny
# checkpoint with random weights biased to 80-95% FFN sparsity, written with
# its reference (greedy ids, last-prompt logits) by the independent numpy
# forward pass scripts/ref/tiny_ckpt.py (written from the public modeling
# code, not from the client):
#   relu            ReLU-Llama      model_type llama, hidden_act relu
#   fatrelu         ProSparse       model_type sparsellama, hidden_act fatrelu
#   drelu           TurboSparse     model_type bamboo (dReLU)
#   cats            CATS            model_type sparse_llama, per-layer thresholds
#   silu            plain SwiGLU    (the reference checked on the known path)
#   mistral-window  Mistral         sliding_window 8, prompt + generation >= 5x
# Each is packed (f32), mounted, and the client must give: dense greedy ids
# identical to the reference; last-prompt-position logits within 1e-4
# relative (max |diff| / max |ref|); oracle ids identical to dense (exact
# activations; no calibration). For fatrelu and cats the generator keeps every
# pre-activation of its runs at least 1e-5 from the threshold where the
# coefficient jumps (float32 rounding there would decide the logits, not the
# implementation). (The window's ring and its flat KV bytes are
# e2e_window's, on a larger synthetic model.)
# Finally the refusals that remain: one line naming the key and the value.
# Env: INFLASH_SHARED, INFLASH_BIN, INFLASH_SRC (set by ctest).
set -u
source "$(dirname "$0")/lib.sh"
e2e_env
e2e_pynum
INFLASH=$INFLASH_BIN/inflash
REF=$INFLASH_SRC/scripts/ref
e2e_tmp zoo
STEP=300

# check.py REF_JSON MODE ARGS...: every reference prompt through the client
# (ARGS: the source), greedy ids against the reference (dense) or against
# the dense run (oracle: the ids must equal the reference's, which dense
# must match too), logits within 1e-4 relative in dense mode.
cat >"$T/check.py" <<'PY'
import json, os, struct, subprocess, sys
ref_path, mode, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
ref = json.load(open(ref_path))
tmp = os.environ["E2E_TMP"]
fails = 0
def report(good, what):
    global fails
    print(("ok   " if good else "FAIL ") + what)
    fails += 0 if good else 1
for i, p in enumerate(ref["prompts"]):
    lf = os.path.join(tmp, "logits.f32")
    args = ["--prompt-ids", " ".join(map(str, p["prompt_ids"])), "-n", str(len(p["greedy_ids"])), "-t", "0",
            "--ids", "--mode", mode]
    if mode == "dense":
        args += ["--dump-logits", lf]
    r = subprocess.run(cmd + args, capture_output=True, timeout=300)
    if r.returncode != 0:
        report(False, "%s prompt %d: exit %d: %s" % (mode, i, r.returncode, r.stderr.decode().strip()))
        continue
    lines = r.stdout.decode().rstrip("\n").split("\n")
    got = [int(x) for x in lines[-1].split()[1:]] if lines[-1].startswith("ids:") else []
    want = p["prompt_ids"] + p["greedy_ids"]
    where = next((k for k in range(len(want)) if k >= len(got) or got[k] != want[k]), None)
    report(got == want, "%s prompt %d (%d + %d ids, top-1 margin %.2g%s): ids identical to the reference%s" %
           (mode, i, len(p["prompt_ids"]), len(p["greedy_ids"]), p["min_top1_margin"],
            ", threshold margin %.2g" % p["min_threshold_margin"] if "min_threshold_margin" in p else "",
            "" if got == want else " -- first difference at %s" % where))
    if mode == "dense":
        rl = p["last_prompt_logits"]
        lg = struct.unpack("<%df" % len(rl), open(lf, "rb").read())
        md, mx = max(abs(a - b) for a, b in zip(lg, rl)), max(abs(b) for b in rl)
        report(md <= 1e-4 * mx, "dense prompt %d: last-prompt logits max |diff| %.2e, relative %.2e <= 1e-4" %
               (i, md, md / mx))
sys.exit(1 if fails else 0)
PY
export E2E_TMP=$T

for kind in relu fatrelu drelu cats silu mistral-window; do
    echo "# $kind (at ${SECONDS}s)"
    if ! T_ "$PYNUM" "$REF/tiny_ckpt.py" "$kind" "$T/src-$kind" >"$T/gen-$kind.log" 2>&1; then
        bad "$kind: tiny_ckpt.py failed: $(tail -n 2 "$T/gen-$kind.log")"
        continue
    fi
    ok "$kind: reference checkpoint ($(grep -i sparsity "$T/gen-$kind.log" | tail -n 1))"
    pack "$kind" "$T/src-$kind" f32
    mnt "$kind"
    modes="dense oracle"
    # SwiGLU has no exact zeros: its oracle needs calibration (e2e_sparse)
    case $kind in silu | mistral-window) modes=dense ;; esac
    for mode in $modes; do
        T_ python3 "$T/check.py" "$T/src-$kind/reference.json" "$mode" "$INFLASH" "$T/mnt/$kind" ||
            fails=$((fails + 1))
    done
done

# ---- refusals: one line naming the key and the value ---------------------------------
echo "# refusals (at ${SECONDS}s)"
refuse() {   # refuse NAME KIND NEEDLE PYTHON-EDIT: edit a copy of config.json, pack must refuse
    local name=$1 kind=$2 needle=$3 edit=$4
    [ -d "$T/src-$kind" ] || { bad "$name: no $kind checkpoint"; return; }
    rm -rf "$T/bad-$name" && cp -r "$T/src-$kind" "$T/bad-$name"
    python3 - "$T/bad-$name/config.json" <<PY
import json, sys
c = json.load(open(sys.argv[1]))
$edit
json.dump(c, open(sys.argv[1], "w"), indent=2)
PY
    "$INFLASH_BIN/inflash-pack" "$T/bad-$name" "$T/out-$name" --dtype f32 >"$T/stdout" 2>"$T/stderr"
    local rc=$?
    if [ $rc -ne 1 ]; then
        bad "$name: exit $rc ($(head -c 300 "$T/stderr"))"
    elif [ "$(wc -l <"$T/stderr")" -ne 1 ] || ! grep -qF -- "$needle" "$T/stderr"; then
        bad "$name: expected one line naming $needle: $(cat "$T/stderr")"
    elif [ -e "$T/out-$name" ]; then
        bad "$name: output left behind"
    else
        ok "$name: $(cat "$T/stderr")"
    fi
}
refuse "hidden_act gelu"           relu    '"hidden_act": "gelu"'     'c["hidden_act"] = "gelu"'
refuse "fatrelu without param"     fatrelu '"hidden_act_param"'       'del c["hidden_act_param"]'
refuse "fatrelu negative param"    fatrelu '"hidden_act_param"'       'c["hidden_act_param"] = -1'
refuse "thresholds wrong length"   cats    '"thresholds"'             'c["thresholds"] = c["thresholds"][:1]'
refuse "thresholds not numbers"    cats    '"thresholds"'             'c["thresholds"] = ["a"] * len(c["thresholds"])'
refuse "rope_scaling"              relu    '"rope_scaling"'           'c["rope_scaling"] = {"type": "linear", "factor": 2.0}'
refuse "sliding_window 0"          mistral-window '"sliding_window"'  'c["sliding_window"] = 0'
refuse "sliding_window string"     mistral-window '"sliding_window"'  'c["sliding_window"] = "8"'
refuse "unknown model_type"        relu    '"falcon"'                 'c["model_type"] = "falcon"'

e2e_finish e2e_zoo
