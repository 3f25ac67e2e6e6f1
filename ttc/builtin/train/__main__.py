"""Rebuild the built-in model pair: `python -m ttc.train policy|prm|all|report --out DIR --seed S`.

    policy   train the policy, keep the checkpoint that fits the target window, export
             DIR/tiny-arith-policy.gguf (f32); with --size large the 7.15M-parameter policy,
             DIR/tiny-arith-large.gguf (f16). A killed run started again with the same flags resumes
             from DIR/policy-resume.pt (written every 50 steps) and ends with the same weights.
    prm      sample from the policy GGUF (DIR's, else the shipped one), train the PRM, export
             DIR/tiny-arith-prm.gguf (f16)
    all      policy, then prm on it, then report
    report   measure the pair on the shipped 500 problems (DIR's files, else the shipped ones)
    export-hf  the policy and PRM GGUFs (--policy, --prm; default the shipped pair) in Hugging Face format,
             DIR/policy and DIR/prm (config.json, model.safetensors, tokenizer.json), for vLLM or
             transformers; deterministic, under a second
    flops    the pretraining FLOPs (6 x parameters x tokens) of a policy: its training tokens up to the
             kept checkpoint (--policy-steps), replayed from the seed with the flags it was trained with
             (the revision batches estimated from the GGUF's own attempts), and DIR/policy-train.json's
             logged count where the run kept one

`--install` copies the exported files into ttc/models/. Training is seeded: the same seed, thread count
and torch build give the same models. Run it under `nice` on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
POLICY_FILE, PRM_FILE = "tiny-arith-policy.gguf", "tiny-arith-prm.gguf"
LARGE_FILE = "tiny-arith-large.gguf"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _add_config_args(p: argparse.ArgumentParser, cls, prefix: str) -> None:
    for f in dataclasses.fields(cls):
        if f.name == "seed":
            continue
        flag = f"--{prefix}{f.name.replace('_', '-')}"
        if f.type in (bool, "bool"):
            p.add_argument(
                flag,
                type=lambda s: s.lower() in ("1", "true", "yes"),
                default=None,
                metavar="BOOL",
                help=f"(default {f.default})",
            )
        else:
            typ = {"int": int, "float": float, "str": str}.get(str(f.type), type(f.default))
            p.add_argument(flag, type=typ, default=None, help=f"(default {f.default})")


def _config(cls, args, prefix: str, seed: int, base: dict | None = None):
    kw = {"seed": seed, **(base or {})}
    for f in dataclasses.fields(cls):
        v = getattr(args, (prefix + f.name).replace("-", "_"), None)
        if v is not None and f.name != "seed":
            kw[f.name] = v
    return cls(**kw)


def _selected_checkpoint(out: Path) -> str | None:
    import json

    try:
        path = json.loads((out / "policy-train.json").read_text())["selected"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if Path(path).exists() else None


def _flops(args, out: Path, cfg) -> int:
    """Print (and write DIR/pretraining-flops.json) a policy's pretraining tokens and FLOPs."""
    import json

    from .export import load_gguf_model
    from .policy import training_tokens

    path = args.policy or MODELS_DIR / (LARGE_FILE if args.size == "large" else POLICY_FILE)
    model = load_gguf_model(path)
    n = model.n_params()
    tokens = training_tokens(cfg, model, cfg.steps)
    rep = {"policy": str(path), "params": n, "steps": cfg.steps, "tokens_replayed": tokens, "flops": 6 * n * tokens}
    try:
        logged = json.loads((out / "policy-train.json").read_text())
        rep["tokens_logged_all_steps"] = logged["tokens"]
    except (OSError, ValueError, KeyError):
        pass
    _log(json.dumps(rep))
    (out / "pretraining-flops.json").write_text(json.dumps(rep, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    from .policy import LARGE, PolicyConfig
    from .prm import PRMConfig

    ap = argparse.ArgumentParser(
        prog="python -m ttc.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["policy", "prm", "all", "report", "flops", "export-hf"])
    ap.add_argument("--out", type=Path, required=True, help="folder for checkpoints, GGUFs and reports")
    ap.add_argument("--seed", type=int, default=2, help="seed (default 2: the shipped pair)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--policy", type=Path, default=None, help="policy GGUF for prm/report")
    ap.add_argument("--prm", type=Path, default=None, help="PRM GGUF for report")
    ap.add_argument("--install", action="store_true", help="copy the exported GGUFs into ttc/models/")
    ap.add_argument(
        "--size",
        choices=["small", "large"],
        default="small",
        help="the policy to train: small (tiny-arith-policy, 0.87M) or large (tiny-arith-large, 7.15M, f16)",
    )
    ap.add_argument("--fresh", action="store_true", help="ignore DIR/policy-resume.pt and start over")
    ap.add_argument("--report-samples", type=int, default=16, help="samples per problem in the report")
    _add_config_args(ap, PolicyConfig, "policy-")
    _add_config_args(ap, PRMConfig, "prm-")
    args = ap.parse_args(argv)

    if args.what == "export-hf":
        from .hf import export_hf

        for role, path in (
            ("policy", args.policy or MODELS_DIR / POLICY_FILE),
            ("prm", args.prm or MODELS_DIR / PRM_FILE),
        ):
            _log(f"wrote {export_hf(path, args.out / role)} (from {path})")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    from .common import load_checkpoint
    from .export import export_gguf, load_gguf_model, load_weights
    from .policy import train_policy
    from .prm import train_prm
    from .report import full_report, save_report

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.what == "flops":
        return _flops(
            args, out, _config(PolicyConfig, args, "policy_", args.seed, LARGE if args.size == "large" else None)
        )
    policy_path = args.policy
    if args.what in ("policy", "all"):
        large = args.size == "large"
        cfg = _config(PolicyConfig, args, "policy_", args.seed, LARGE if large else None)
        rep = train_policy(cfg, out, _log, resume=not args.fresh)
        model, _ = load_checkpoint(rep["selected"]["path"])
        name, dtype = (LARGE_FILE, "f16") if large else (POLICY_FILE, "f32")
        what = "ttc tiny-arith large policy" if large else "ttc tiny-arith policy"
        policy_path = export_gguf(model, out / name, what, dtype)
        _log(f"wrote {policy_path} ({policy_path.stat().st_size / 1e6:.2f} MB)")
        if args.install:
            shutil.copy(policy_path, MODELS_DIR / name)
    if policy_path is None:
        policy_path = out / POLICY_FILE if (out / POLICY_FILE).exists() else MODELS_DIR / POLICY_FILE
    prm_path = args.prm
    if args.what in ("prm", "all"):
        cfg = _config(PRMConfig, args, "prm_", args.seed)
        init_path = cfg.init
        if init_path == "auto":  # the selected policy checkpoint of this folder's run, else the policy GGUF
            init_path = _selected_checkpoint(out) or str(policy_path)
        _log(f"prm: samples from {policy_path}, warm start from {init_path}")
        init = None
        if init_path != "scratch":
            init = load_weights(init_path)
        rep = train_prm(cfg, load_gguf_model(policy_path), init, out, _log)
        model, _ = load_checkpoint(rep["selected"]["path"])
        prm_path = export_gguf(model, out / PRM_FILE, "ttc tiny-arith PRM", "f16")
        _log(f"wrote {prm_path} ({prm_path.stat().st_size / 1e6:.2f} MB)")
        if args.install:
            shutil.copy(prm_path, MODELS_DIR / PRM_FILE)
    if args.what in ("all", "report"):
        if prm_path is None:
            prm_path = out / PRM_FILE if (out / PRM_FILE).exists() else MODELS_DIR / PRM_FILE
        _log(f"report: policy {policy_path}, PRM {prm_path}")
        rep = full_report(
            load_gguf_model(policy_path),
            load_gguf_model(prm_path),
            policy_path,
            n_samples=args.report_samples,
            log=_log,
        )
        save_report(rep, out / "report.json")
        _log(f"wrote {out / 'report.json'}")
    _log(f"done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
