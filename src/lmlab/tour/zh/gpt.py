"""导览站：字级 GPT。在人民日报上训练一两分钟（800 步），然后采样生成中文。"""

from __future__ import annotations

import math

PROMPT = "新华社北京"


def run_stop(ctx) -> None:
    from lmlab.recipes.gpt import GPTRecipe
    from lmlab.tour.zh.embed import slice_lines

    lines = slice_lines(ctx, "peoples-daily-1998.txt.gz", 2500, 300)
    data = ctx.workdir / "peoples-daily.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # work-bounded (~95 s of one core; two cores are quicker); the budget (x2) is only a cap on a busy machine.
    # 800 steps, the learning rate annealed to the end, is where the samples become recognisable news Chinese
    # (validation loss ~5.5 nats/character; 600 steps at a constant rate left it at ~6.0, garbled)
    steps = max(10, round(800 * min(1.0, ctx.scale)))
    budget = max(10.0, ctx.budget_s * 2)
    recipe = GPTRecipe.from_preset(
        "nanogpt-cpu",
        ["model.num_layers=2", "model.embed_dim=128", "model.num_heads=4", "model.block_size=64",
         "train.batch_size=16", "train.lr=0.003", "train.schedule=cosine", "train.min_lr=0.0003",
         "train.warmup_steps=50",
         f"train.max_steps={steps}", f"train.max_time_s={budget:.0f}", "train.eval_every=0", "train.save_every=0",
         "train.progress=false", "train.tensorboard=false", "data.max_eval_tokens=20000"],
        data=str(data),
        log=ctx.log,
    )
    run = recipe.config
    run_dir = ctx.workdir / "char-gpt"
    ctx.log(f"训练 {run.model.num_layers} 层、宽 {run.model.embed_dim} 的字级 GPT（上下文 {run.model.block_size} 字），"
            f"{steps} 步（最多 {budget:.0f} 秒）")
    result = recipe.train(run_dir, overwrite=True)
    val_loss = result.best
    vocab = recipe.codec.vocab_size
    chars_seen = result.step * run.train.batch_size * run.model.block_size
    ctx.log(f"{result.step} 步（读了 {chars_seen:,} 个字），用时 {result.train_time_s:.0f} 秒：验证损失 {val_loss:.3f} "
            f"nats/字（均匀猜测：{math.log(vocab):.2f}）")
    pipe = GPTRecipe.load(run_dir)
    samples = []
    for seed in (0, 1):
        text = PROMPT + pipe.generate(PROMPT, max_new_tokens=120, temperature=0.8, top_p=0.95, seed=seed)["text"]
        ctx.log(f"样本（温度 0.8，top-p 0.95，种子 {seed}）：\n{text}")
        samples.append(text)
    ctx.section(
        "字级 GPT：人民日报",
        f"一个 {run.model.num_layers} 层、{run.model.num_heads} 头、宽 {run.model.embed_dim} 的仅解码器 Transformer"
        f"（{pipe.model.num_parameters():,} 个参数，上下文 {run.model.block_size} 字，字表 {vocab:,} 个字）在人民日报前 "
        f"{len(lines):,} 段的前 90% 上训练 {result.train_time_s:.0f} 秒（{result.step} 步，读了 {chars_seen:,} 个字）。"
        "每个汉字是一个词元，生成的文字直接相连，不插空格。\n\n"
        "| 指标（留出的文字） | 值 |\n|---|---:|\n"
        f"| 验证损失，nats/字 | {val_loss:.3f} |\n"
        f"| 均匀猜测的损失 ln({vocab}) | {math.log(vocab):.3f} |\n\n"
        f"以“{PROMPT}”开头采样（温度 0.8，top-p 0.95）：\n\n```\n" + "\n\n".join(samples) + "\n```\n\n"
        "整个月语料上训练更久的结果见 `benchmarks/chinese.py`。",
    )
