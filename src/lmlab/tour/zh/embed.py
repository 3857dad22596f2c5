"""导览站：词向量。jieba 分词后的人民日报（1998 年 1 月）上训练 skip-gram，列出几个词的近邻。"""

from __future__ import annotations

import gzip
import time

QUERIES = ["中国", "经济", "北京", "改革", "人民", "新年", "记者", "美国"]
EXAMPLE = "迈向充满希望的新世纪——一九九八年新年讲话"


def slice_lines(ctx, name: str, full: int, minimum: int, header: bool = False) -> list[str]:
    """The first ``full * scale`` (at least ``minimum``) lines of a bundled file (a tiny scale reads fewer)."""
    n = full if ctx.scale >= 1 else max(minimum, int(full * ctx.scale))
    with gzip.open(ctx.data_dir / name, "rt", encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    return lines[: n + (1 if header else 0)]


def run_stop(ctx) -> None:
    from lmlab.data.tokenizers import WordTokenizer
    from lmlab.recipes.embed import Word2VecRecipe

    lines = slice_lines(ctx, "peoples-daily-1998.txt.gz", 2500, 300)
    corpus = ctx.workdir / "peoples-daily.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    chars = sum(map(len, lines))
    jieba = WordTokenizer(segmenter="jieba")
    words = jieba.tokenize(EXAMPLE)
    ctx.log(f"jieba 分词示例：{EXAMPLE} -> {' / '.join(words)}")
    epochs = max(1, round(20 * min(1.0, ctx.scale)))  # a small corpus needs many passes
    ctx.log(f"skip-gram（负采样）：人民日报前 {len(lines):,} 段（{chars:,} 个字），维度 100，窗口 5，{epochs} 轮")
    t0 = time.monotonic()
    sg = Word2VecRecipe.from_preset("sgns", [f"epochs={epochs}", "min_count=3", "threads=0", "seed=1"],
                                    corpus=str(corpus), log=ctx.log)
    sg.train(ctx.workdir / "skipgram", overwrite=True)
    took = time.monotonic() - t0
    kv = sg.model.wv
    neighbours = [(w, kv.most_similar(w, topn=5)) for w in QUERIES if w in kv]
    for word, hits in neighbours:
        ctx.log(f"  {word}: " + "，".join(f"{w} ({s:.2f})" for w, s in hits))
    info = sg.model.corpus_info
    table = ["| 词 | 最近邻（余弦相似度） |", "|---|---|"]
    table += [f"| {w} | " + "，".join(f"{n} {s:.2f}" for n, s in hits) + " |" for w, hits in neighbours]
    ctx.section(
        "词向量：人民日报 + jieba 分词",
        f"中文书写不留空格，按标点切分会把整句当成一个“词”。lmlab 检测到文本以汉字为主，自动改用 jieba 分词"
        f"（`data.segmenter=auto`，选择写入运行目录，加载时照样使用），例如：\n\n"
        f"```\n{EXAMPLE}\n-> {' / '.join(words)}\n```\n\n"
        f"skip-gram（负采样）读了人民日报 1998 年 1 月的前 {len(lines):,} 段（{chars:,} 个字，分词后 "
        f"{info['num_raw_tokens']:,} 个词，出现至少 3 次的词 {info['vocab_size']:,} 个）{epochs} 遍，用时 {took:.0f} 秒"
        f"（每个样本的训练损失 {sg.model.history[0].loss:.3f} -> {sg.model.history[-1].loss:.3f}）。\n\n"
        + "\n".join(table)
        + "\n\n语料只有二十多万字，近邻已经能把同类的词聚在一起；整个月的语料（186 万字）见 "
        "`benchmarks/chinese.py`。自己试试：`lmlab embed similar runs/tour/embed/skipgram 词`。",
    )
