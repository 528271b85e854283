#!/usr/bin/env python3
"""slo_mix.py — writes loadgen mixes from tiny-moe-7task's eval docs.

  slo_mix.py schedule DOCS OUT [--n-inter N] [--gap S] [--ttft-ms M]
      the e2e scenario: 8 best-effort requests of 256 tokens at t=0 (class
      batch), then N interactive requests (16 tokens, slo.ttft_ms M) every
      S seconds from t=0.3 (class interactive).
  slo_mix.py poisson DOCS OUT [--ttft-ms M] [--tpot-ms T] [--inter-share F]
      a two-class Poisson mix: interactive (tight TTFT/TPOT, 16 tokens) and
      batch (no SLO, 128 tokens), weights F : 1-F.
"""
import argparse, json

def prompts(docs, n, chars):
    out = []
    for line in open(docs):
        d = json.loads(line)
        out.append((d["task"], d["text"][:chars]))
        if len(out) >= n:
            break
    return out

ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["schedule", "poisson"])
ap.add_argument("docs")
ap.add_argument("out")
ap.add_argument("--n-inter", type=int, default=16)
ap.add_argument("--gap", type=float, default=0.25)
ap.add_argument("--ttft-ms", type=float, default=600)
ap.add_argument("--tpot-ms", type=float, default=0)
ap.add_argument("--inter-share", type=float, default=0.5)
ap.add_argument("--batch-tokens", type=int, default=128)
a = ap.parse_args()
ps = prompts(a.docs, 80, 200)
with open(a.out, "w") as f:
    if a.mode == "schedule":
        for i in range(8):
            t, p = ps[i * 9 % len(ps)]
            f.write(json.dumps({"at": 0.0, "class": "batch", "task": t, "prompt": p, "max_tokens": 256,
                                "ignore_eos": True}) + "\n")
        for i in range(a.n_inter):
            t, p = ps[(i * 7 + 3) % len(ps)]
            f.write(json.dumps({"at": round(0.3 + a.gap * i, 3), "class": "interactive", "task": t,
                                "prompt": p[:80], "max_tokens": 16, "ignore_eos": True,
                                "slo": {"ttft_ms": a.ttft_ms}}) + "\n")
    else:
        slo = {"ttft_ms": a.ttft_ms}
        if a.tpot_ms > 0:
            slo["tpot_ms"] = a.tpot_ms
        for i in range(20):
            t, p = ps[(i * 7 + 3) % len(ps)]
            f.write(json.dumps({"class": "interactive", "weight": a.inter_share, "task": t, "prompt": p[:80],
                                "max_tokens": 16, "ignore_eos": True, "slo": slo}) + "\n")
        for i in range(20):
            t, p = ps[(i * 11 + 1) % len(ps)]
            f.write(json.dumps({"class": "batch", "weight": 1 - a.inter_share, "task": t, "prompt": p,
                                "max_tokens": a.batch_tokens, "ignore_eos": True}) + "\n")
