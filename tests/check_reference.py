#!/usr/bin/env python3
# check_reference.py MODEL_DIR COMPARE_LOGITS(0|1) INFLASH ARGS...: the client
# (INFLASH ARGS: a mount or a store) against a model folder's reference.json:
# every reference prompt greedy (ids exact, logits within 1e-3 of
# reference_logits.f32), and for stories260K the run.c text of 256 tokens
# from BOS, byte for byte. Env E2E_TMP: a scratch directory. Used by the
# end-to-end scripts (e2e_client.sh, e2e_gated.sh); exit 1 on any failure.
import json, os, struct, subprocess, sys
mdir, cmp_logits, cmd = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
tmp = os.environ["E2E_TMP"]
ref = json.load(open(os.path.join(mdir, "reference.json")))
stories = "run_c_greedy_256" in ref
fails = 0
def run(args):
    return subprocess.run(cmd + args, capture_output=True, timeout=600)
def report(good, what):
    global fails
    print(("ok   " if good else "FAIL ") + what)
    fails += 0 if good else 1
if stories:
    want = open(os.path.join(mdir, "reference_greedy_run_c.txt"), "rb").read()
    r = run(["-p", "", "-n", "256", "-t", "0"])
    report(r.returncode == 0 and r.stdout == want,
           "run.c greedy text, 256 tokens from BOS (%d of %d bytes%s)" % (len(r.stdout), len(want), "" if r.returncode == 0 else ", " + r.stderr.decode().strip()))
    vocab, ref_rows = 512, [p["last_prompt_position_logits"] for p in ref["prompts"]]
else:
    vocab = 1024
    raw = open(os.path.join(mdir, "reference_logits.f32"), "rb").read()
    ref_rows = [struct.unpack_from("<%df" % vocab, raw, i * 4 * vocab) for i in range(len(ref["prompts"]))]
for i, p in enumerate(ref["prompts"]):
    pf, lf = os.path.join(tmp, "prompt.txt"), os.path.join(tmp, "logits.f32")
    with open(pf, "w") as f:
        f.write(p["prompt"])
    r = run(["-f", pf, "-n", str(len(p["greedy_ids"])), "-t", "0", "--ids", "--dump-logits", lf])
    if r.returncode != 0:
        report(False, "prompt %d: exit %d: %s" % (i, r.returncode, r.stderr.decode().strip()))
        continue
    lines = r.stdout.decode().rstrip("\n").split("\n")
    got = [int(x) for x in lines[-1].split()[1:]] if lines[-1].startswith("ids:") else []
    want = p["prompt_ids"] + p["greedy_ids"]
    where = next((k for k in range(len(want)) if k >= len(got) or got[k] != want[k]), None)
    report(got == want, "prompt %d %r: %d ids identical%s" % (i, p["prompt"][:20], len(want),
           "" if got == want else " -- first difference at %s (got %d ids)" % (where, len(got))))
    if cmp_logits:
        lg = struct.unpack("<%df" % vocab, open(lf, "rb").read())
        md = max(abs(a - b) for a, b in zip(lg, ref_rows[i]))
        report(md <= 1e-3, "prompt %d: last-prompt-position logits, max |diff| %.2e <= 1e-3" % (i, md))
sys.exit(1 if fails else 0)
