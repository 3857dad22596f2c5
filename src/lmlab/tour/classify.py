"""Tour stop: the classic Keras sentiment project (seed-lstm) on the bundled rt-polarity sentences."""

from __future__ import annotations

import random

from lmlab.data.readers import load_examples


def run_stop(ctx) -> None:
    from lmlab.metrics import format_confusion_matrix
    from lmlab.models.classifier import resolve_run_config, train_classifier
    from lmlab.pipelines import Classifier
    from lmlab.plots import plot_confusion, plot_curves

    examples = load_examples(ctx.data_dir / "rt-polarity.jsonl.gz")
    random.Random(0).shuffle(examples)
    n_test = len(examples) // 10
    test, train = examples[:n_test], examples[n_test:]
    run_dir = ctx.workdir / "seed-lstm"
    run = resolve_run_config(
        "seed-lstm", [f"train.max_time_s={ctx.budget_s * 0.8:.0f}", "train.progress=false", "train.tensorboard=false"]
    )
    ctx.log(f"training seed-lstm (the Keras tutorial model) on {len(train)} rt-polarity snippets, "
            f"at most {run.train.epochs} epochs or {run.train.max_time_s:.0f} s")
    train_classifier(run, train, str(run_dir), overwrite=True, log=ctx.log)
    pipe = Classifier.from_run_dir(run_dir)
    report = pipe.evaluate(test)
    ctx.log(f"test accuracy {report['accuracy']:.3f} (macro F1 {report['macro_f1']:.3f}) on {report['n']} held-out snippets")
    samples = [
        "a gorgeous, witty and moving film",
        "the plot is thin and the acting is wooden",
        "not as bad as i feared , but not good either",
    ]
    lines = []
    for text, pred in zip(samples, pipe.predict(samples), strict=True):
        line = f"{pred['label']}  p={pred['probability']:.2f}  {text}"
        ctx.log("  " + line)
        lines.append(line)
    curves = plot_curves(run_dir, ctx.workdir / "classify-curves.png")
    confusion = plot_confusion(report["confusion_matrix"], report["labels"], ctx.workdir / "classify-confusion.png")
    ctx.section(
        "Sentiment classification (Embedding + LSTM, the Keras tutorial model)",
        f"`seed-lstm` trained on {len(train)} rt-polarity snippets (Pang & Lee 2005) and tested on {report['n']} "
        f"held-out ones.\n\n"
        f"| metric | value |\n|---|---:|\n| test accuracy | {report['accuracy']:.3f} |\n"
        f"| macro F1 | {report['macro_f1']:.3f} |\n\n"
        "```\n" + format_confusion_matrix(report["confusion_matrix"], report["labels"]) + "\n```\n\n"
        "Predictions:\n\n```\n" + "\n".join(lines) + "\n```",
        images=[curves, confusion],
    )
