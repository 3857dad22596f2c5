"""``FillMask``: a trained masked LM's guesses for each ``[MASK]`` of a text (the CLI's ``lmlab mlm fill`` and
the server's ``POST /v1/fill-mask``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from lmlab import checkpoint
from lmlab.data.mlm import MASK_TOKEN, MLMCodec
from lmlab.errors import CheckpointError, DataError

#: the most [MASK]s one text may hold
MAX_MASKS = 32


class FillMask:
    """``fill_mask(texts, top_k)``: for every ``[MASK]`` of each text, the ``top_k`` most likely tokens with their
    probabilities (the model's softmax over the whole vocabulary; special tokens are never offered)."""

    model_type = "mlm"

    def __init__(self, model: Any, codec: MLMCodec, run_dir: Path | None = None, max_masks: int = MAX_MASKS) -> None:
        if not getattr(model.config, "head", True):
            raise CheckpointError(
                f"{run_dir or 'this model'}: the checkpoint has no MLM head (it was saved without cls.predictions, "
                "e.g. from transformers' BertModel), so it cannot fill [MASK]; fine-tune it with lmlab classify "
                "train --init-from, or import a BertForMaskedLM checkpoint"
            )
        self.model = model.eval()
        self.codec = codec
        self.run_dir = run_dir
        self.max_masks = max_masks

    def info(self) -> dict:
        info = {
            "model_type": self.model_type,
            "vocab_size": self.codec.vocab_size,
            "parameters": self.model.num_parameters(),
            "tokenizer": self.codec.kind,
            "block_size": self.model.config.block_size,
            "max_masks": self.max_masks,
            "architecture": dataclasses.asdict(self.model.config),
        }
        if self.run_dir is not None:
            info["trained_on"] = checkpoint.load_config(self.run_dir).get("corpus", {})
        return info

    def encode(self, text: str) -> list[int]:
        """``[CLS]`` + the ids of ``text`` (each ``[MASK]`` as the mask id) + ``[SEP]``; DataError for a text with
        no ``[MASK]``, too many, or too long for the model."""
        count = text.count(MASK_TOKEN)
        if count == 0:
            raise DataError(f"the text has no {MASK_TOKEN}: put {MASK_TOKEN} where a word should be guessed")
        if count > self.max_masks:
            raise DataError(f"the text has {count} {MASK_TOKEN}s; at most {self.max_masks} are allowed")
        ids = [self.codec.cls_id, *self.codec.encode_masked(text), self.codec.sep_id]
        limit = self.model.config.block_size
        if len(ids) > limit:
            raise DataError(
                f"the text is {len(ids) - 2} tokens long; this model reads at most {limit - 2} "
                f"(model.block_size {limit} with [CLS] and [SEP]): shorten it"
            )
        return ids

    @torch.no_grad()
    def fill_mask(self, texts: list[str], top_k: int = 5) -> list[dict]:
        """For each text ``{"text", "filled" (each [MASK] replaced by its best guess), "masks": [[{"token",
        "id", "probability"}, ... top_k], ...one list per [MASK]]}``."""
        if isinstance(texts, str):
            texts = [texts]
        if not 1 <= int(top_k) <= self.codec.vocab_size - self.codec.num_specials:
            raise DataError(f"top_k must be between 1 and {self.codec.vocab_size - self.codec.num_specials}, got {top_k}")
        rows = [self.encode(t) for t in texts]
        device = next(self.model.parameters()).device
        T = max(len(r) for r in rows)
        ids = torch.full((len(rows), T), self.codec.pad_id, dtype=torch.long)
        pad_mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for b, row in enumerate(rows):
            ids[b, : len(row)] = torch.tensor(row)
            pad_mask[b, : len(row)] = True
        ids, pad_mask = ids.to(device), pad_mask.to(device)
        where = ids == self.codec.mask_id  # (B, T)
        hidden = self.model.features(ids, pad_mask if not bool(pad_mask.all()) else None)  # (B, T, C)
        probs = torch.softmax(self.model.lm_logits(hidden[where]).float(), dim=-1)  # (N, V)
        probs[:, self.codec.specials] = 0.0  # never offer [PAD], [MASK], ...
        top_p, top_i = probs.topk(int(top_k), dim=-1)  # (N, k)
        results, k = [], 0
        for b, text in enumerate(texts):
            masks, best = [], []
            for _ in where[b].nonzero().flatten().tolist():
                candidates = [
                    {"token": self._shown(i), "id": int(i), "probability": float(p)}
                    for p, i in zip(top_p[k].tolist(), top_i[k].tolist(), strict=True)
                ]
                masks.append(candidates)
                best.append(int(top_i[k, 0]))
                k += 1
            results.append({"text": text, "filled": self._splice(text, best), "masks": masks})
        return results

    def _splice(self, text: str, best: list[int]) -> str:
        """``text`` as the user wrote it, each ``[MASK]`` replaced by the text of its best piece. Splicing (rather
        than decoding the ids) keeps what the tokenizer cannot: characters outside a character vocabulary, case
        and width before normalisation, the user's own spacing."""
        parts = text.split(MASK_TOKEN)
        out = [parts[0]]
        for i, part in zip(best, parts[1:], strict=True):
            piece = self.codec.piece(i)
            if piece.startswith("##") and len(piece) > 2:  # a WordPiece continuation: joined to what precedes
                piece = piece[2:]
            if self.codec.vocab is None and (not out[-1] or out[-1][-1].isspace()):
                piece = piece.lstrip()  # a BPE piece's leading space, when the user's own already separates
            out.append(piece)
            out.append(part)
        return "".join(out)

    def _shown(self, i: int) -> str:
        piece = self.codec.piece(i)
        return piece.strip() or piece
