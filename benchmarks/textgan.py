"""SeqGAN vs MLE: the synthetic-oracle table of Yu et al. (2017) and a quality/diversity temperature sweep on real
captions (Caccia et al. 2020), side by side in one run.

Oracle part (per seed, all seeds in parallel worker processes): one MLE run of P + E epochs whose generator is
snapshotted after P epochs (the SeqGAN pre-training); SeqGAN = that snapshot + D pre-training + adversarial
rounds; MLE = the same run continued E more epochs ("equal total epochs": an adversarial round counts as one
epoch, as on the paper's Figure 2, so E defaults to the number of rounds). NLL-oracle on 10,000 samples each.

Real part (Multi30k English): the same protocol with held-out NLL, BLEU-2..5 against the 1,000 test captions and
Self-BLEU-2..5 of 1,000 samples at each temperature, for the GAN and for the MLE models.

    python benchmarks/textgan.py                      # everything, paper-sized oracle (use a GPU)
    python benchmarks/textgan.py --smoke              # minutes on a CPU: tiny oracle, tiny real run
    python benchmarks/textgan.py --part cpu-timing    # per-step wall times on this machine, extrapolated
    python benchmarks/textgan.py --part step-timing --threads 1   # seconds per step of each phase, before/after
                                                      # (gan.step_impl) -> step_timing in --out
    python benchmarks/textgan.py --quick              # --smoke sizes, few epochs/rounds, one seed (QUICK), ~2 min

``--quick`` sets the defaults in ``QUICK`` (options given on the command line still win) and writes
benchmarks/results/textgan.quick.json (and .png); its parts go to runs/bench-textgan-quick, one thread each.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmlab.callbacks import Callback  # noqa: E402
from lmlab.config import config_from_dict, config_to_dict, load_preset, merge  # noqa: E402
from lmlab.models import textgan as tg  # noqa: E402
from lmlab.recipes import gan as rg  # noqa: E402

PAPER = {"random": 10.310, "mle": 9.038, "seqgan": 8.736}
DATA = ROOT.parent / "shared" / "data" / "multi30k" / "tok"  # --data-dir overrides


class Snapshot(Callback):
    """Copy the generator's weights (and the clock) once the global step reaches ``at_step``."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step
        self.state = None
        self.t0 = time.monotonic()
        self.seconds = None

    def on_step_end(self, trainer, logs) -> None:
        if trainer.state.step == self.at_step and self.state is None:
            self.state = copy.deepcopy(trainer.model.generator.state_dict())
            self.seconds = time.monotonic() - self.t0


def _log(tag):
    return lambda msg: print(f"[{tag}] {msg}", flush=True)


def run_config(sections: dict) -> rg.GANRunConfig:
    return config_from_dict(rg.GANRunConfig, sections, "config")


def train(cfg: rg.GANRunConfig, log, prepared, init_generator=None, callbacks=()):
    """One SeqGAN recipe run in a throw-away run directory -> (model, monitor)."""
    import tempfile

    recipe = rg.GANRecipe(cfg, log=log, prepared=prepared, init_generator=init_generator)
    with tempfile.TemporaryDirectory() as tmp:
        recipe.train(Path(tmp) / "run", callbacks=callbacks)
    return recipe.model, recipe.monitor


def oracle_settings(args) -> dict:
    over = {
        "train": {"seed": args.seed, "device": args.device, "progress": False, "tensorboard": False, "num_threads": args.threads},
        "gan": {"rollout_num": args.rollout_num, "eval_every_epochs": args.eval_every_epochs, "eval_every_rounds": 10},
    }
    if args.smoke:
        over["oracle"] = {"vocab_size": 200, "seq_len": 10, "num_samples": 1000, "eval_samples": 1000}
        over["model"] = {"d_filter_sizes": [2, 3, 4, 6], "d_num_filters": [16, 16, 16, 16], "d_embed_dim": 16}
    return over


def run_oracle(args) -> dict:
    """MLE for P epochs (= SeqGAN's pre-training); then SeqGAN from that generator; then MLE continued E epochs
    from the same generator (a fresh Adam, like SeqGAN's own fresh optimizers)."""
    torch.set_num_threads(args.threads)
    base = oracle_base(args)
    P, E, R = args.pretrain_epochs, args.mle_extra_epochs, args.adversarial_rounds
    guard = {"train": {"max_time_s": args.max_time_s}}
    pre_cfg = run_config(merge(base, {"gan": {"pretrain_epochs": P, "d_pretrain_steps": 0, "adversarial_rounds": 0}, **guard}))
    log = _log(f"oracle seed {args.seed}")
    t = time.monotonic()
    prepared = rg.prepare_data(pre_cfg, log)
    data_s = time.monotonic() - t
    t = time.monotonic()
    pre_model, pre_mon = train(pre_cfg, log, prepared)
    pre_s = time.monotonic() - t
    snapshot = copy.deepcopy(pre_model.generator.state_dict())
    pre_curve = [(h["pretrain_epochs_done"], h["val_nll_oracle"], h["val_nll_test"]) for h in pre_mon.history]
    result = {
        "seed": args.seed,
        "random": pre_mon.history[0]["val_nll_oracle"],
        "mle_pretrained": pre_mon.history[-1]["val_nll_oracle"],
        "pretrain_epochs": pre_mon.history[-1]["pretrain_epochs_done"],
        "oracle_data_nll": prepared.oracle.nll(prepared.train),
        "wall_s": {"oracle_data": data_s, "mle_pretrain": pre_s},
        "config": {"pretrain": config_to_dict(pre_cfg)},
    }
    if result["pretrain_epochs"] < P:
        result["incomplete"] = f"pre-training stopped by --max-time-s={args.max_time_s} at {result['pretrain_epochs']} epochs"
        result["mle_curve"] = pre_curve
        return result
    gan_cfg = run_config(merge(base, {"gan": {"pretrain_epochs": 0, "d_pretrain_steps": args.d_pretrain_steps, "adversarial_rounds": R, "d_steps_per_round": args.d_steps_per_round}, **guard}))
    gan_cfg.model = copy.deepcopy(pre_cfg.model)
    t = time.monotonic()
    _, gan_mon = train(gan_cfg, log, prepared, init_generator=snapshot)
    result["wall_s"]["seqgan_adversarial"] = time.monotonic() - t
    result["seqgan"] = gan_mon.history[-1]["val_nll_oracle"]
    result["seqgan_rounds"] = gan_mon.history[-1]["rounds_done"]
    result["seqgan_curve"] = [(P + h["rounds_done"], h["val_nll_oracle"], h["val_nll_test"]) for h in gan_mon.history]
    result["config"]["seqgan"] = config_to_dict(gan_cfg)
    mle_cfg = run_config(merge(base, {"gan": {"pretrain_epochs": E, "d_pretrain_steps": 0, "adversarial_rounds": 0}, **guard}))
    mle_cfg.model = copy.deepcopy(pre_cfg.model)
    t = time.monotonic()
    _, mle_mon = train(mle_cfg, log, prepared, init_generator=snapshot)
    result["wall_s"]["mle_continued"] = time.monotonic() - t
    result["mle"] = mle_mon.history[-1]["val_nll_oracle"]
    result["mle_epochs"] = P + mle_mon.history[-1]["pretrain_epochs_done"]
    result["mle_curve"] = pre_curve + [(P + h["pretrain_epochs_done"], h["val_nll_oracle"], h["val_nll_test"]) for h in mle_mon.history[1:]]
    result["config"]["mle_continued"] = config_to_dict(mle_cfg)
    return result


def run_real(args) -> dict:
    torch.set_num_threads(args.threads)
    over = {
        "train": {"seed": args.seed, "device": args.device, "progress": False, "tensorboard": False, "num_threads": args.threads, "max_time_s": args.max_time_s},
        "data": {"path": str(args.data_dir / "train.lc.norm.tok.en.gz"), "test_path": str(args.data_dir / "test_2016_flickr.lc.norm.tok.en")},
        "gan": {"rollout_num": args.rollout_num},
    }
    if args.smoke:
        over["data"]["max_lines"] = 2000
        over["model"] = {"embed_dim": 16, "hidden_dim": 32, "d_filter_sizes": [2, 3, 4], "d_num_filters": [16, 16, 16], "d_embed_dim": 16}
    base = merge(load_preset("seqgan-multi30k", "gan"), over)
    if args.real_set:
        from lmlab.config import parse_overrides

        base = merge(base, parse_overrides(args.real_set))
    P, E, R = args.real_pretrain_epochs, args.real_mle_extra_epochs, args.real_adversarial_rounds
    log = _log("real")
    mle_cfg = run_config(merge(base, {"gan": {"pretrain_epochs": P + E, "d_pretrain_steps": 0, "adversarial_rounds": 0}}))
    prepared = rg.prepare_data(mle_cfg, log)
    spe = len(prepared.train) // mle_cfg.train.batch_size
    snap = Snapshot(P * spe)
    t = time.monotonic()
    mle_model, mle_mon = train(mle_cfg, log, prepared, callbacks=[snap])
    mle_s = time.monotonic() - t
    gan_cfg = run_config(merge(base, {"gan": {"pretrain_epochs": 0, "d_pretrain_steps": args.real_d_pretrain_steps, "adversarial_rounds": R, "d_steps_per_round": args.d_steps_per_round}}))
    gan_cfg.model = copy.deepcopy(mle_cfg.model)
    t = time.monotonic()
    gan_model, gan_mon = train(gan_cfg, log, prepared, init_generator=snap.state)
    gan_s = time.monotonic() - t
    pre = tg.Generator(mle_cfg.model).to(mle_model.generator.head.weight.device)
    pre.load_state_dict(snap.state)
    temps = args.temperatures
    codec = rg.codec_for(mle_cfg, prepared.vocab)
    t = time.monotonic()
    sweeps = {}
    for name, gen in (("mle_pretrained", pre), ("mle", mle_model.generator), ("seqgan", gan_model.generator)):
        rows = rg.quality_diversity(gen, codec, prepared.references, temps, args.real_samples, seed=args.seed)
        sweeps[name] = {"nll_test": tg.generator_nll(gen, prepared.heldout), "sweep": rows}
        log(f"{name}: nll_test {sweeps[name]['nll_test']:.4f}; " + "; ".join(f"T={r['temperature']}: BLEU-4 {r['bleu4']:.3f} SelfBLEU-4 {r['self_bleu4']:.3f}" for r in rows))
    samples = {
        name: [codec.decode(s) for s in tg.sample_many(gen, 8, 1.0, 0).tolist()]
        for name, gen in (("mle", mle_model.generator), ("seqgan", gan_model.generator))
    }
    return {
        "train_sentences": len(prepared.train),
        "truncated": prepared.truncated,
        "vocab_size": len(prepared.vocab),
        "pretrain_epochs": P,
        "mle_epochs": P + E,
        "seqgan_rounds": gan_mon.history[-1]["rounds_done"],
        "models": sweeps,
        "samples_T1": samples,
        "mle_curve": mle_mon.history,
        "seqgan_curve": gan_mon.history,
        "wall_s": {"mle_pretrain": snap.seconds, "mle_total": mle_s, "seqgan_adversarial": gan_s, "eval": time.monotonic() - t},
        "config": {"mle": config_to_dict(mle_cfg), "seqgan": config_to_dict(gan_cfg)},
    }


def cpu_timing(args) -> dict:
    """Wall time per step of each phase at the paper's oracle size, on this machine, and the extrapolated totals."""
    torch.set_num_threads(args.threads)
    cfg = run_config(load_preset("seqgan-oracle", "gan"))
    m = cfg.model
    m.vocab_size, m.max_len = 5000, 20
    model = tg.SeqGAN(m, cfg.gan)
    opts = model.configure_optimizers(cfg.train)
    real = torch.randint(0, 5000, (64, 20))

    def clock(fn, k):
        fn()
        t = time.monotonic()
        for _ in range(k):
            fn()
        return (time.monotonic() - t) / k

    def mle():
        loss, _ = model.mle_loss(real)
        opts[0].zero_grad()
        loss.backward()
        opts[0].step()

    def dstep():
        fake = model.generator.sample(64)
        loss, _ = model.discriminator_loss(real, fake)
        opts[2].zero_grad()
        loss.backward()
        opts[2].step()

    def pg():
        seqs = model.generator.sample(64)
        r = model.rewards(seqs, cfg.gan.rollout_num)
        loss = model.policy_gradient_loss(seqs, r)
        opts[1].zero_grad()
        loss.backward()
        opts[1].step()

    per = {"mle_step": clock(mle, args.timing_steps), "d_step": clock(dstep, args.timing_steps), "pg_step": clock(pg, max(1, args.timing_steps // 5))}
    spe = 10_000 // 64
    steps = {"mle_step": 120 * spe, "d_step": args.d_pretrain_steps + 200 * args.d_steps_per_round, "pg_step": 200}
    return {
        "threads": args.threads,
        "seconds_per_step": per,
        "steps_in_schedule": steps,
        "extrapolated_hours": {k: per[k] * steps[k] / 3600 for k in per},
        "load_average": os.getloadavg(),
    }


def oracle_base(args) -> dict:
    """The oracle part's config sections: the seqgan-oracle preset + this run's settings and --oracle-set."""
    base = merge(load_preset("seqgan-oracle", "gan"), oracle_settings(args))
    if args.oracle_set:
        from lmlab.config import parse_overrides

        base = merge(base, parse_overrides(args.oracle_set))
    return base


def _reference_sample(generator, n: int, seed: int, chunk: int = 2000) -> torch.Tensor:
    """``tg.sample_many`` as it was before the chunked draws (full (n, V) logits per position): the same samples."""
    g = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for i in range(0, n, chunk):
            b = min(chunk, n - i)
            tok = torch.full((b,), generator.config.start_id, dtype=torch.long)
            seqs, state = torch.empty(b, generator.config.max_len, dtype=torch.long), None
            for t in range(generator.config.max_len):
                logits, state = generator.step(tok, state)
                tok = tg.draw_categorical(logits.float(), g)
                seqs[:, t] = tok
            out.append(seqs)
    return torch.cat(out)


def _reference_nll(net, seqs: torch.Tensor, batch_size: int = 1000) -> float:
    """Per-token NLL as it was computed before :func:`lmlab.models.head_nll.linear_nll`: log_softmax of the full
    (b, T, V) logits (``net`` is the oracle or a generator: embedding, lstm, head)."""
    total = 0.0
    with torch.no_grad():
        for chunk in seqs.split(batch_size):
            inputs = torch.cat([torch.full_like(chunk[:, :1], 0), chunk[:, :-1]], dim=1)
            out, _ = net.lstm(net.embedding(inputs))
            logp = torch.log_softmax(net.head(out).float(), dim=-1)  # (b, T, V)
            total -= logp.gather(-1, chunk.unsqueeze(-1)).sum().item()
    return total / seqs.numel()


def step_timing(args) -> dict:
    """Median seconds per step of each phase at the oracle part's size (one process, ``--threads`` threads), once
    per ``gan.step_impl`` ("reference" = before, "fused" = after), and the projected wall time of one seed of the
    whole schedule: P MLE epochs, D pre-training, the adversarial rounds, the MLE row's E continued epochs and
    every NLL-oracle evaluation.

    A step is what ``SeqGAN.phase_step`` does (a policy-gradient step: sample a batch, compute the rewards with
    the batched rollouts, backpropagate, step Adam, update the rollout net). An evaluation is what the recipe's
    OracleEvaluator does: 10,000 generator samples scored by the oracle, and the generator's NLL on 2,000 oracle
    samples (``eval_reference``: the same numbers computed as before the chunked head). The two implementations
    alternate step by step so that both see the same machine load.
    """
    from lmlab.models.oracle import OracleLSTM

    torch.set_num_threads(args.threads)
    base = oracle_base(args)
    cfg = run_config(base)
    m, o = cfg.model, cfg.oracle
    m.vocab_size, m.max_len = o.vocab_size, o.seq_len
    B = cfg.train.batch_size
    spe = o.num_samples // B
    P, E, rounds, dpr = args.pretrain_epochs, args.mle_extra_epochs, args.adversarial_rounds, args.d_steps_per_round
    adv = P * spe + args.d_pretrain_steps  # the first adversarial step
    impls = ("reference", "fused")
    models, opts = {}, {}
    for impl in impls:
        gan = copy.deepcopy(cfg.gan)
        gan.step_impl, gan.rollout_impl = impl, "batched"
        gan.pretrain_epochs, gan.d_pretrain_steps, gan.adversarial_rounds = P, args.d_pretrain_steps, max(rounds, 2)
        gan.g_steps_per_round, gan.d_steps_per_round = 1, max(dpr, 1)
        torch.manual_seed(0)
        models[impl] = tg.SeqGAN(copy.deepcopy(m), gan)
        opts[impl] = models[impl].configure_optimizers(cfg.train)
    dpr_model = models["fused"].gan.d_steps_per_round
    assert tg.phase_at(adv + 1, spe, models["fused"].gan)[0] == "d"
    assert tg.phase_at(adv + 1 + dpr_model, spe, models["fused"].gan) == ("pg", 1)
    real = torch.randint(0, o.vocab_size, (B, o.seq_len), generator=torch.Generator().manual_seed(0))
    oracle = OracleLSTM(o)
    heldout = oracle.sample(min(o.num_samples, 2000), generator=torch.Generator().manual_seed(o.seed + 2))
    clip = cfg.train.grad_clip

    def step(impl, at):
        return lambda: models[impl].phase_step(real, opts[impl], at, spe, clip)

    def evaluate(impl):
        gen = models[impl].generator
        if impl == "reference":
            return _reference_nll(oracle, _reference_sample(gen, o.eval_samples, 0)), _reference_nll(gen, heldout)
        return oracle.nll(tg.sample_many(gen, o.eval_samples, 1.0, 0)), tg.generator_nll(gen, heldout)

    times: dict[str, list[float]] = {}
    evals: dict[str, tuple] = {}
    k = max(1, args.timing_steps)

    def clock(name: str, fn, keep: bool = True):
        t = time.perf_counter()
        out = fn()
        if keep:
            times.setdefault(name, []).append(time.perf_counter() - t)
        print(f"[timing] {name} {time.perf_counter() - t:.3f} s", flush=True)
        return out

    # evaluations first, while both models are the same initial model (their values must agree)
    for rep in range(2):
        for impl in impls if rep % 2 == 0 else impls[::-1]:
            evals.setdefault(impl, clock(f"eval_{impl}", lambda impl=impl: evaluate(impl)))
    # the steps: one warm-up each, then alternating pairs (the order flipped every pair); the short steps get
    # more pairs, so that load swings of a few seconds average out
    plan = [("mle_step", 0, 20 * k), ("d_step", adv + 1, 5 * k), ("pg_step", adv + 1 + dpr_model, k)]
    for phase, at, n in plan:
        for rep in range(n + 1):
            for impl in impls if rep % 2 == 0 else impls[::-1]:
                clock(f"{phase}_{impl}", step(impl, at), keep=rep > 0)
    per = {name: statistics.median(v) for name, v in times.items()}
    n_evals = (P // max(1, args.eval_every_epochs) + 1) + (rounds // 10 + 1) + (E // max(1, args.eval_every_epochs) + 1)
    steps = {"mle_step": (P + E) * spe, "d_step": args.d_pretrain_steps + rounds * dpr, "pg_step": rounds, "eval": n_evals}
    projected = {}
    for impl in impls:
        parts_s = {ph: per[f"{ph}_{impl}"] * n for ph, n in steps.items()}
        projected[impl] = {"hours": sum(parts_s.values()) / 3600, "hours_by_phase": {k2: v / 3600 for k2, v in parts_s.items()}}
    return {
        "what": "median seconds per step of each phase at the oracle part's size, per gan.step_impl (reference = "
                "before, fused = after; batched rollouts in both), the two alternating step by step in one process; "
                "eval = one OracleEvaluator call (NLL-oracle of 10,000 samples + NLL of 2,000 held-out oracle "
                "samples); projected = steps of one seed's schedule (P MLE epochs, D pre-training, the adversarial "
                "rounds, the MLE row's E continued epochs, every evaluation) x the median step time",
        "threads": args.threads,
        "size": {"vocab_size": o.vocab_size, "seq_len": o.seq_len, "embed_dim": m.embed_dim, "hidden_dim": m.hidden_dim,
                 "batch_size": B, "rollout_num": cfg.gan.rollout_num, "d_filters": sum(m.d_num_filters)},
        "schedule": {"pretrain_epochs": P, "mle_extra_epochs": E, "d_pretrain_steps": args.d_pretrain_steps,
                     "adversarial_rounds": rounds, "d_steps_per_round": dpr},
        "seconds_per_step": per,
        "samples": times,
        "speedup": {ph: per[f"{ph}_reference"] / per[f"{ph}_fused"] for ph in steps},
        "eval_values_at_init": {impl: {"nll_oracle": v[0], "nll_test": v[1]} for impl, v in evals.items()},
        "steps_in_schedule": steps,
        "projected_per_seed": projected,
        "load_average": os.getloadavg(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def summarize(parts: dict, args) -> dict:
    out = {"benchmark": "textgan", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv), "machine": machine(), "paper": PAPER}
    seeds = [s for s in parts.get("oracle", []) if "incomplete" not in s]
    if len(seeds) < len(parts.get("oracle", [])):
        out["oracle_incomplete"] = [s for s in parts.get("oracle", []) if "incomplete" in s]
    if seeds:
        table = {}
        for key in ("random", "mle_pretrained", "mle", "seqgan"):
            vals = [s[key] for s in seeds if s.get(key) is not None]
            if vals:
                table[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "values": vals}
        out["oracle"] = {"table": table, "seeds": seeds, "oracle_data_nll": seeds[0]["oracle_data_nll"]}
        oracle_cfg = seeds[0]["config"]["pretrain"]["oracle"]
        paper_sized = (oracle_cfg["vocab_size"], oracle_cfg["seq_len"], oracle_cfg["num_samples"]) == (5000, 20, 10000)
        out["oracle"]["oracle_config"] = oracle_cfg
        out["oracle"]["paper_sized"] = paper_sized
        if "mle" in table and "seqgan" in table:
            mle, gan = table["mle"]["median"], table["seqgan"]["median"]
            targets = {
                "seqgan_below_own_mle": gan < mle,
                "seqgan_below_mle_in_every_seed": all(s["seqgan"] < s["mle"] for s in seeds),
                "seqgan_below_its_pretrained_start": gan < table["mle_pretrained"]["median"],
            }
            if paper_sized:
                targets["mle_within_0.1_of_9.038"] = abs(mle - PAPER["mle"]) <= 0.1
                targets["seqgan_le_8.74"] = gan <= 8.74
            else:
                targets["paper_targets"] = "not applicable: a reduced oracle (see oracle_config)"
            out["oracle"]["targets"] = targets
    for key in ("real", "cpu_timing", "step_timing"):
        if key in parts:
            out[key] = parts[key]
    return out


def print_table(res: dict) -> None:
    if "oracle" in res:
        t = res["oracle"]["table"]
        oc = res["oracle"]["oracle_config"]
        print(f"\nNLL-oracle (lower is better), median [min, max] over seeds; oracle vocab {oc['vocab_size']}, "
              f"length {oc['seq_len']}, {oc['num_samples']} sequences, scored on {oc['eval_samples']} samples")
        print(f"{'model':<22}{'paper':>8}  {'ours':>24}")
        names = {"random": "random generator", "mle_pretrained": "MLE (pre-training only)", "mle": "MLE (equal epochs)", "seqgan": "SeqGAN"}
        for key, name in names.items():
            if key in t:
                paper = f"{PAPER[key]:.3f}" if key in PAPER and res["oracle"]["paper_sized"] else "-"
                v = t[key]
                print(f"{name:<22}{paper:>8}  {v['median']:>8.3f} [{v['min']:.3f}, {v['max']:.3f}]")
        print(f"oracle's own samples: {res['oracle']['oracle_data_nll']:.3f}; targets: {res['oracle'].get('targets')}")
    if "gpu_paper_oracle_mle" in res:
        g = res["gpu_paper_oracle_mle"]
        vals = sorted(g["at_90_epochs"].values())
        print(f"\nPaper-sized oracle, MLE only (GPU, cut at ~95 of 120 epochs): random {statistics.median(g['random_generator'].values()):.3f}, "
              f"MLE at 90 epochs median {statistics.median(vals):.3f} [{vals[0]:.3f}, {vals[-1]:.3f}] (paper MLE 9.038)")
    if "real" in res:
        print("\nMulti30k: held-out NLL and the temperature sweep (BLEU-4 quality / Self-BLEU-4 diversity)")
        for name, m in res["real"]["models"].items():
            print(f"{name:<16} nll_test {m['nll_test']:.3f}  " + "  ".join(f"T{r['temperature']}:{r['bleu4']:.3f}/{r['self_bleu4']:.3f}" for r in m["sweep"]))
    if "cpu_timing" in res:
        print("\nCPU seconds per step:", res["cpu_timing"]["seconds_per_step"], "extrapolated hours:", res["cpu_timing"]["extrapolated_hours"])
    if "step_timing" in res:
        st = res["step_timing"]
        print(f"\nSeconds per step ({st['threads']} thread(s), median; vocab {st['size']['vocab_size']}, length "
              f"{st['size']['seq_len']}, {st['size']['rollout_num']} rollouts):")
        for name, v in st["seconds_per_step"].items():
            print(f"  {name:<22}{v:>9.3f}")
        print("  speedup fused / reference: " + ", ".join(f"{k} {v:.2f}x" for k, v in st["speedup"].items()))
        for impl, pr in st["projected_per_seed"].items():
            by = ", ".join(f"{k} {v:.2f}" for k, v in pr["hours_by_phase"].items())
            print(f"  projected schedule per seed, step_impl {impl}: {pr['hours']:.2f} h ({by})")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("gpu_paper_oracle_mle", "oracle", "real") if k in res]
    if not panels:
        return
    n_axes = len(panels) + (1 if "real" in res else 0)
    fig, axes = plt.subplots(1, n_axes, figsize=(5.2 * n_axes, 4.2))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    i = 0
    if "gpu_paper_oracle_mle" in res:
        ax = axes[i]
        i += 1
        g = res["gpu_paper_oracle_mle"]
        for name, curve in g["curves"].items():
            ax.plot([c["epochs"] for c in curve], [c["nll_oracle"] for c in curve], "o-", ms=3, label=f"MLE {name}")
        ax.axhline(PAPER["mle"], color="tab:blue", ls=":", lw=1, label="paper MLE 9.038")
        ax.axhline(PAPER["seqgan"], color="tab:red", ls=":", lw=1, label="paper SeqGAN 8.736")
        ax.set_ylim(8.6, 9.4)
        ax.set_xlabel("MLE epochs")
        ax.set_ylabel("NLL-oracle (10,000 samples)")
        ax.set_title("Paper-sized oracle, MLE only (GPU, cut at ~95 epochs)", fontsize=10)
        ax.legend(fontsize=8)
    if "oracle" in res:
        ax = axes[i]
        i += 1
        for s in res["oracle"]["seeds"]:
            x, y = zip(*[(a, b) for a, b, _ in s["mle_curve"]], strict=True)
            ax.plot(x, y, color="tab:blue", alpha=0.6, label="MLE" if s is res["oracle"]["seeds"][0] else None)
            x, y = zip(*[(a, b) for a, b, _ in s["seqgan_curve"]], strict=True)
            ax.plot(x, y, color="tab:red", alpha=0.6, label="SeqGAN" if s is res["oracle"]["seeds"][0] else None)
        oc = res["oracle"]["oracle_config"]
        if res["oracle"]["paper_sized"]:
            ax.axhline(PAPER["seqgan"], color="tab:red", ls=":", lw=1, label="paper SeqGAN 8.736")
            ax.axhline(PAPER["mle"], color="tab:blue", ls=":", lw=1, label="paper MLE 9.038")
        ax.set_xlabel("epochs (pre-training epochs + adversarial rounds)")
        ax.set_ylabel(f"NLL-oracle ({oc['eval_samples']:,} samples)")
        ax.set_title(f"Oracle V={oc['vocab_size']} T={oc['seq_len']} N={oc['num_samples']}, every seed", fontsize=10)
        ax.legend(fontsize=8)
    if "real" in res:
        colors = {"mle_pretrained": "tab:green", "mle": "tab:blue", "seqgan": "tab:red"}
        for j, n in enumerate((4, 5)):
            ax = axes[i + j]
            for name, m in res["real"]["models"].items():
                xs = [r[f"self_bleu{n}"] for r in m["sweep"]]
                ys = [r[f"bleu{n}"] for r in m["sweep"]]
                ax.plot(xs, ys, "o-", color=colors.get(name), label=f"{name} (NLL {m['nll_test']:.2f})")
                for r in m["sweep"]:
                    ax.annotate(f"{r['temperature']:g}", (r[f"self_bleu{n}"], r[f"bleu{n}"]), fontsize=7)
            ax.set_xlabel(f"Self-BLEU-{n} (lower = more diverse)")
            ax.set_ylabel(f"BLEU-{n} vs test captions (higher = better quality)")
            ax.set_title(f"Multi30k temperature sweep, {n}-grams")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


QUICK = {
    "smoke": True, "seeds": [0], "threads": 1, "device": "cpu", "pretrain_epochs": 6, "adversarial_rounds": 3,
    "d_pretrain_steps": 50, "d_steps_per_round": 3, "rollout_num": 4, "eval_every_epochs": 3,
    "real_pretrain_epochs": 2, "real_mle_extra_epochs": 1, "real_adversarial_rounds": 2, "real_d_pretrain_steps": 50,
    "real_samples": 200, "temperatures": [0.8, 1.0], "timing_steps": 2, "parts_dir": ROOT / "runs" / "bench-textgan-quick",
    "out": ROOT / "benchmarks" / "results" / "textgan.quick.json",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["all", "oracle", "real", "cpu-timing", "step-timing", "merge"], default="all",
                    help="oracle/all also time one step of each phase first (--timing-steps 0: skip); step-timing "
                         "only times them and adds the record to --out, keeping the other records")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seed", type=int, default=0, help="(worker) the seed of this worker")
    ap.add_argument("--pretrain-epochs", type=int, default=120)
    ap.add_argument("--mle-extra-epochs", type=int, default=None, help="default: --adversarial-rounds")
    ap.add_argument("--adversarial-rounds", type=int, default=200)
    ap.add_argument("--d-pretrain-steps", type=int, default=3000)
    ap.add_argument("--d-steps-per-round", type=int, default=30)
    ap.add_argument("--rollout-num", type=int, default=16)
    ap.add_argument("--eval-every-epochs", type=int, default=10)
    ap.add_argument("--real-pretrain-epochs", type=int, default=20)
    ap.add_argument("--real-mle-extra-epochs", type=int, default=5)
    ap.add_argument("--real-adversarial-rounds", type=int, default=200)
    ap.add_argument("--real-d-pretrain-steps", type=int, default=2000)
    ap.add_argument("--real-samples", type=int, default=1000)
    ap.add_argument("--oracle-set", nargs="*", default=[], help="KEY=VALUE overrides of the oracle config (e.g. oracle.vocab_size=500)")
    ap.add_argument("--real-set", nargs="*", default=[], help="KEY=VALUE overrides of the real-data config (e.g. data.max_lines=10000)")
    ap.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5])
    ap.add_argument("--timing-steps", type=int, default=5, help="timed steps per phase (median); 0: no step timing")
    ap.add_argument("--max-time-s", type=float, default=0.0, help="stop each training run after this long (0: no limit)")
    ap.add_argument("--data-dir", type=Path, default=DATA, help="folder with Multi30k's tokenised English files")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks the whole pipeline in minutes on a CPU")
    ap.add_argument("--parts-dir", type=Path, default=ROOT / "benchmarks" / "results" / "textgan_parts")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "textgan.json")
    ap.add_argument("--extra-parts-dir", type=Path, default=None, help="(merge) take missing parts from here")
    ap.add_argument("--with-cpu-timing", action="store_true", help="also run the cpu-timing part (on the CPU)")
    ap.add_argument("--attach", nargs="*", default=[], help="(merge) KEY=PATH: add a JSON file's content under KEY")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--quick", action="store_true", help="small sizes (QUICK); writes textgan.quick.json")
    if "--quick" in sys.argv[1:]:
        ap.set_defaults(**QUICK)
    args = ap.parse_args()
    if args.mle_extra_epochs is None:
        args.mle_extra_epochs = args.adversarial_rounds
    args.parts_dir.mkdir(parents=True, exist_ok=True)
    if args.part == "step-timing":
        timing = step_timing(args)
        res = json.loads(args.out.read_text()) if args.out.is_file() else {"benchmark": "textgan", "machine": machine()}
        res["step_timing"] = timing
        args.out.write_text(json.dumps(res, indent=1))
        print_table({"step_timing": timing})
        print(f"\nadded step_timing to {args.out}")
        return
    if args.part in ("oracle", "all") and not args.worker and args.timing_steps > 0:
        # before the workers start, so that they do not share the CPU with it
        (args.parts_dir / "step-timing.json").write_text(json.dumps(step_timing(args), indent=1))
    if args.worker:
        fn = {"oracle": run_oracle, "real": run_real, "cpu-timing": cpu_timing}[args.part]
        res = fn(args)
        name = f"oracle_seed{args.seed}.json" if args.part == "oracle" else f"{args.part}.json"
        (args.parts_dir / name).write_text(json.dumps(res, indent=1))
        return
    if args.part != "merge":
        jobs = []
        todo = ["oracle", "real"] if args.part == "all" else [args.part]
        if args.with_cpu_timing and "cpu-timing" not in todo:
            todo.append("cpu-timing")
        skip = False
        clean = []
        for a in sys.argv[1:]:  # drop "--part X" and "--seeds ..." from the worker command lines
            if skip and not a.startswith("--"):
                continue
            skip = a in ("--seeds", "--part")
            if a == "--with-cpu-timing":
                continue
            if not skip:
                clean.append(a)
        for part in todo:
            for seed in (args.seeds if part == "oracle" else [args.seeds[0]]):
                cmd = [sys.executable, __file__, "--worker", "--part", part, "--seed", str(seed), *clean]
                log = open(args.parts_dir / f"{part}_{seed}.log", "w")
                jobs.append((part, seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        for part, seed, proc, log in jobs:
            rc = proc.wait()
            log.close()
            print(f"worker {part} seed {seed}: exit {rc}", flush=True)
    parts: dict = {}
    for f in sorted(args.parts_dir.glob("oracle_seed*.json")):
        parts.setdefault("oracle", []).append(json.loads(f.read_text()))
    for key in ("real", "cpu-timing", "step-timing"):
        f = args.parts_dir / f"{key}.json"
        if not f.is_file() and args.extra_parts_dir is not None:
            f = args.extra_parts_dir / f"{key}.json"
        if f.is_file():
            parts[key.replace("-", "_")] = json.loads(f.read_text())
    res = summarize(parts, args)
    for item in args.attach:
        key, path = item.split("=", 1)
        res[key] = json.loads(Path(path).read_text())
    args.out.write_text(json.dumps(res, indent=1))
    plot(res, args.out.with_suffix(".png"))
    print_table(res)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
