"""Text classification: Embedding + LSTM models, from the classic Keras tutorial to a stronger BiLSTM, and the
linear fastText baseline.

Three architectures share one module:

``stacked-lstm`` (preset ``seed-lstm``) is the Keras tutorial model exactly::

    Embedding(10000, 256) -> LSTM(64, return_sequences=True) -> LSTM(32) -> Dense(64, relu) -> Dense(1, sigmoid)

with Keras' initialisers (uniform(-0.05, 0.05) embeddings, Glorot-uniform kernels, orthogonal recurrent
kernels, zero biases with the forget-gate bias at 1) and Keras' single bias per gate: PyTorch's LSTM keeps two
(b_ih and b_hh); here b_hh is fixed at zero and not trained, so the trainable parameters equal Keras' 2,656,769.
Like Keras without ``mask_zero``, the LSTMs read the padding too (that is what "post" padding means there).

``bilstm`` (preset ``bilstm``, the one we recommend): embedding dropout -> bidirectional LSTM that never reads
the padding (:class:`lmlab.models.rnn.PaddedBiRNN`: packed-sequence semantics at the fused kernel's speed) -> concatenated max- and mean-pooling over time -> dropout -> linear.
With ``bag_dim > 0`` the pooled LSTM features are joined by a bag of n-grams, as in fastText (Joulin et al.,
2017, "Bag of Tricks for Efficient Text Classification"): the mean of embeddings of every word and of every
adjacent word pair, the pairs hashed into ``bigram_buckets`` rows. Word order beyond two words is left to the
LSTM; the bag gives the linear model on uni- and bigrams that is hard to beat on long reviews (Wang & Manning,
2012, "Baselines and Bigrams").

``linear`` (preset ``linear``) is fastText's supervised model (Joulin et al., 2017): that same bag alone, of
width ``embed_dim`` -- the mean of the embeddings of every word and hashed word bigram of the text -- then one
linear layer, no hidden non-linearity. The bag's rows are fastText's input matrix (uniform(-1/E, 1/E)), the output
layer starts at zero as fastText's does. With ``sparse`` (the preset) the bag's gradient is a sparse tensor of the
rows a batch touched and the step is taken by :meth:`TextClassifier.manual_step` with plain SGD, so a step costs
the batch's n-grams, not the millions of hash rows: that is what makes it train in seconds on a CPU.

``sparse-lr`` (presets ``tfidf`` and ``nblr``) is the other classic linear text model, trained to its optimum
instead of by SGD: logistic regression on sparse, weighted n-gram features -- scikit-learn's TF-IDF +
LogisticRegression, and with ``nb`` the NB-weighted logistic regression of Wang & Manning (2012, "Baselines and
Bigrams"; NBSVM with the logistic loss). It is its own arch, not an option of ``linear``: it has no embedding
width, no dropout, no SGD; its parameters are one weight per (feature, output) and the fit is a convex problem
solved by :meth:`TextClassifier.fit_lbfgs`. A text's features are (:meth:`TextClassifier.sparse_features`):

* the word ids (rows ``1 .. vocab_size-1``) and the hashed word n-grams for n = 2 .. ``ngrams`` (row
  ``vocab_size + h mod bigram_buckets``, h the same multiplicative hash of the ids as ``linear``'s bigrams, taken
  modulo 2^31-1 so that longer n-grams do not overflow), and with ``char_ngrams = [a, b]`` the a..b character
  n-grams of each word written ``<word>`` (fastText's subwords, hashed by CRC-32 into the same buckets; a table
  word id -> its n-gram rows is a buffer of the model, see :func:`char_ngram_table`);
* each present feature's value is 1 (``tf=binary``) or ``1 + ln(count)`` (``tf=sublinear``), times the feature
  weight ``feature_weight`` (a buffer saved in model.safetensors, computed from the TRAINING texts only by
  :meth:`TextClassifier.fit_weighting`): scikit-learn's smoothed IDF ``ln((1 + n) / (1 + df)) + 1`` when ``idf``,
  times the NB log-count ratio ``r = ln((p / |p|_1) / (q / |q|_1))`` with ``p = alpha + sum of the binarized
  feature vectors of class-1 texts`` (q: class 0) when ``nb``; then the vector is L2-normalised (``normalize``);
* logits = ``EmbeddingBag(mode="sum")`` of the feature rows with the values as per-sample weights (exactly the
  sparse matrix-vector product x . W) + bias.

The fit minimises scikit-learn's objective ``sum_i loss_i + |W|^2 / (2 C)`` (the bias is not penalised) with
full-batch L-BFGS and a strong-Wolfe line search, in float64, from zero weights: no randomness at all, so the same
data give the same weights; it takes seconds, so a resumed run simply fits again.

All end in one sigmoid unit with binary cross-entropy for two classes (``binary_sigmoid``) or a softmax with
cross-entropy for any number of classes.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lmlab.errors import ConfigError, TrainingError
from lmlab.models.rnn import PaddedBiRNN


@dataclass
class ClassifierConfig:
    arch: Literal["stacked-lstm", "bilstm", "linear", "sparse-lr"] = "bilstm"
    #: filled in from the fitted tokenizer when 0
    vocab_size: int = 0
    #: filled in from the training labels when 0
    num_classes: int = 0
    embed_dim: int = 128
    #: stacked-lstm: hidden size of each LSTM layer (all but the last return every step)
    lstm_dims: list[int] = field(default_factory=lambda: [64, 32])
    #: stacked-lstm: width of the ReLU dense layer before the output (0: none)
    dense_dim: int = 64
    #: bilstm: hidden size per direction
    hidden_dim: int = 128
    num_layers: int = 1
    pooling: Literal["max", "mean", "maxmean", "last"] = "maxmean"
    dropout: float = 0.0
    embed_dropout: float = 0.0
    #: Keras initialisers and Keras' single bias per LSTM gate
    keras_style: bool = False
    #: two classes -> one sigmoid unit with binary cross-entropy (as Keras' Dense(1, sigmoid))
    binary_sigmoid: bool = True
    freeze_embeddings: bool = False
    #: bilstm: width of the n-gram bag (0: no bag)
    bag_dim: int = 0
    #: bilstm and linear: hash buckets for word bigrams in the bag (0: unigrams only); sparse-lr: for every hashed
    #: word n-gram (n >= 2) and character n-gram
    bigram_buckets: int = 0
    #: linear: sparse gradients for the bag, stepped by plain SGD (train.optimizer=sgd, no momentum/weight decay)
    sparse: bool = False
    #: sparse-lr: word n-grams of length 1 .. ngrams
    ngrams: int = 2
    #: sparse-lr: [min, max] character n-grams of every word ("<word>", fastText's subwords); [] for none
    char_ngrams: list[int] = field(default_factory=list)
    #: sparse-lr: filled in from the vocabulary when char_ngrams is set (entries of the word -> char n-gram table)
    char_table_size: int = 0
    #: sparse-lr: a present feature's value: 1 ("binary") or 1 + ln(count) ("sublinear")
    tf: Literal["binary", "sublinear"] = "binary"
    #: sparse-lr: scale features by scikit-learn's smoothed IDF of the training texts
    idf: bool = False
    #: sparse-lr: scale features by the naive-Bayes log-count ratio of the training texts (two classes)
    nb: bool = False
    #: sparse-lr: the NB ratio's additive smoothing
    nb_alpha: float = 1.0
    #: sparse-lr: L2-normalise each text's feature vector
    normalize: bool = True
    #: sparse-lr: features found in fewer training texts than this are dropped (weight 0), as scikit-learn's min_df
    min_df: int = 1
    #: sparse-lr: inverse L2 regularisation strength, scikit-learn's C (objective: sum of losses + |W|^2 / (2C))
    C: float = 1.0  # noqa: N815
    #: sparse-lr: L-BFGS iterations at most
    max_iter: int = 500
    #: sparse-lr: stop when every gradient entry of the mean objective is below tol
    tol: float = 1e-4

    def validate(self) -> None:
        for name in ("embed_dim", "hidden_dim", "num_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.arch == "stacked-lstm" and (not self.lstm_dims or min(self.lstm_dims) < 1):
            raise ConfigError(f"model.lstm_dims must list positive sizes, got {self.lstm_dims}")
        for name in ("dropout", "embed_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        for name in ("bag_dim", "bigram_buckets"):
            if getattr(self, name) < 0:
                raise ConfigError(f"model.{name} must be >= 0, got {getattr(self, name)}")
        if self.bigram_buckets and not self.bag_dim and self.arch not in ("linear", "sparse-lr"):
            raise ConfigError("model.bigram_buckets needs model.bag_dim > 0 (the width of the n-gram bag)")
        if self.bag_dim and self.arch != "bilstm":
            hint = " (the linear model's bag is model.embed_dim wide)" if self.arch == "linear" else ""
            raise ConfigError(f"model.bag_dim is a bilstm option; model.arch is {self.arch!r}{hint}")
        if self.sparse and self.arch != "linear":
            raise ConfigError(f"model.sparse is a linear option; model.arch is {self.arch!r}")
        if self.arch != "sparse-lr":
            base = ClassifierConfig()
            given = [k for k in SPARSE_LR_KEYS if getattr(self, k) != getattr(base, k)]
            if given:
                raise ConfigError(f"model.{given[0]} is a sparse-lr option; model.arch is {self.arch!r}")
            return
        if self.ngrams < 1:
            raise ConfigError(f"model.ngrams must be >= 1, got {self.ngrams}")
        if (self.ngrams > 1 or self.char_ngrams) and self.bigram_buckets < 1:
            raise ConfigError("model.ngrams > 1 and model.char_ngrams need model.bigram_buckets > 0 (hash rows for "
                              "them), e.g. model.bigram_buckets=1048576")
        cn = self.char_ngrams
        if cn and (len(cn) != 2 or not 1 <= cn[0] <= cn[1]):
            raise ConfigError(f"model.char_ngrams must be [min, max] with 1 <= min <= max (e.g. [1, 3]), got {cn}")
        if not self.C > 0:
            raise ConfigError(f"model.C must be > 0 (the inverse regularisation strength), got {self.C}")
        if not self.nb_alpha > 0:
            raise ConfigError(f"model.nb_alpha must be > 0, got {self.nb_alpha}")
        if self.min_df < 1:
            raise ConfigError(f"model.min_df must be >= 1, got {self.min_df}")
        if self.max_iter < 1 or not self.tol > 0:
            raise ConfigError(f"model.max_iter must be >= 1 and model.tol > 0, got {self.max_iter} and {self.tol}")
        if self.dropout or self.embed_dropout or self.freeze_embeddings:
            raise ConfigError("model.dropout, model.embed_dropout and model.freeze_embeddings are not sparse-lr "
                              "options (it is regularised by model.C)")


#: the keys only ``sparse-lr`` reads
SPARSE_LR_KEYS = ("ngrams", "char_ngrams", "char_table_size", "tf", "idf", "nb", "nb_alpha", "normalize", "min_df",
                  "C", "max_iter", "tol")
#: the modulus of the n-gram hash (a prime below 2^31: h * 1000003 + id stays inside int64)
_HASH_MOD = 2_147_483_647


def char_ngram_table(words, n_min: int, n_max: int, first_row: int, buckets: int,
                     skip=frozenset()) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets (V + 1,), rows (N,)): the hashed character n-grams of every vocabulary word, as CSR.

    Word i's rows are ``rows[offsets[i]:offsets[i + 1]]``: for each n-gram g of ``"<" + word + ">"`` with
    ``n_min <= len(g) <= n_max`` (the bare marks "<" and ">" left out), row ``first_row + crc32(g) mod buckets``.
    Words in ``skip`` (the special tokens) have none."""
    offsets, rows = [0], []
    for word in words:
        if word not in skip:
            marked = f"<{word}>"
            for n in range(n_min, n_max + 1):
                for i in range(len(marked) - n + 1):
                    gram = marked[i : i + n]
                    if gram not in ("<", ">"):
                        rows.append(first_row + zlib.crc32(gram.encode("utf-8")) % buckets)
        offsets.append(len(rows))
    return torch.tensor(offsets, dtype=torch.long), torch.tensor(rows, dtype=torch.long)


def _keras_init_lstm(lstm: nn.LSTM) -> None:
    """Keras LSTM defaults: glorot_uniform kernel, orthogonal recurrent kernel, unit forget bias, one bias."""
    hidden = lstm.hidden_size
    for name, p in lstm.named_parameters():
        if name.startswith("weight_ih"):
            # Keras' kernel is (input, 4*hidden) initialised as one matrix: use the same fan-in/fan-out
            bound = math.sqrt(6.0 / (p.shape[1] + 4 * hidden))
            nn.init.uniform_(p, -bound, bound)
        elif name.startswith("weight_hh"):
            # Keras: one orthogonal (hidden, 4*hidden) matrix; PyTorch stores its transpose (4*hidden, hidden)
            nn.init.orthogonal_(p)
        elif name.startswith("bias_ih"):
            nn.init.zeros_(p)
            p.data[hidden : 2 * hidden] = 1.0  # PyTorch gate order i, f, g, o: the forget gate is second
        elif name.startswith("bias_hh"):
            nn.init.zeros_(p)
            p.requires_grad_(False)  # Keras has one bias per gate


class TextClassifier(nn.Module):
    """Embedding + LSTM text classifier, or the linear bag of n-grams (see the module docstring)."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        if config.vocab_size < 2 or config.num_classes < 2:
            raise ConfigError(
                f"model.vocab_size ({config.vocab_size}) and model.num_classes ({config.num_classes}) must be >= 2"
            )
        self.config = config
        c = config
        self.sigmoid_out = c.binary_sigmoid and c.num_classes == 2
        out_dim = 1 if self.sigmoid_out else c.num_classes
        if c.arch == "sparse-lr":
            self.num_features = c.vocab_size + c.bigram_buckets
            # one weight per (feature row, output): a sum-bag with per-feature values is the sparse product x . W
            self.coef = nn.EmbeddingBag(self.num_features, out_dim, mode="sum")
            nn.init.zeros_(self.coef.weight)
            self.intercept = nn.Parameter(torch.zeros(out_dim))
            self.register_buffer("feature_weight", torch.ones(self.num_features))
            if c.char_ngrams:
                self.register_buffer("char_offsets", torch.zeros(c.vocab_size + 1, dtype=torch.long))
                self.register_buffer("char_rows", torch.zeros(c.char_table_size, dtype=torch.long))
            return
        if c.arch == "linear":
            # fastText: the bag is the whole text representation (no token embedding, no LSTM)
            self._init_bag(c.embed_dim, sparse=c.sparse)
            self.drop = nn.Dropout(c.dropout)
            self.out = nn.Linear(c.embed_dim, out_dim)
            nn.init.zeros_(self.out.weight)  # fastText's output matrix starts at zero
            nn.init.zeros_(self.out.bias)
            if c.freeze_embeddings:
                self.bag.weight.requires_grad_(False)
            if c.sparse:
                # only this arch steps itself (the trainer calls manual_step when the model has one)
                self.manual_step = self._sparse_sgd_step
            return
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim, padding_idx=None if c.keras_style else 0)
        self.embed_drop = nn.Dropout(c.embed_dropout)
        if c.arch == "stacked-lstm":
            dims = [c.embed_dim, *c.lstm_dims]
            self.lstms = nn.ModuleList(nn.LSTM(dims[i], dims[i + 1], batch_first=True) for i in range(len(c.lstm_dims)))
            feat = c.lstm_dims[-1]
            self.dense = nn.Linear(feat, c.dense_dim) if c.dense_dim else None
            feat = c.dense_dim or feat
        else:
            # a BiLSTM over the padded batch that never reads the padding (see PaddedBiRNN: packing is ~30x
            # slower on a CPU)
            self.lstm = PaddedBiRNN("lstm", c.embed_dim, c.hidden_dim, c.num_layers, bidirectional=True,
                                    dropout=c.dropout if c.num_layers > 1 else 0.0)
            feat = 2 * c.hidden_dim * (2 if c.pooling == "maxmean" else 1)
            self.dense = None
            if c.bag_dim:
                self._init_bag(c.bag_dim)
                feat += c.bag_dim
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(feat, out_dim)
        if c.keras_style:
            self._keras_init()
        if c.freeze_embeddings:
            self.embedding.weight.requires_grad_(False)

    def _init_bag(self, dim: int, sparse: bool = False) -> None:
        """The n-gram bag: rows for the vocabulary (row 0 = <pad>, excluded from the mean), then the bigram hash
        buckets; fastText's uniform(-1/dim, 1/dim) initialisation."""
        c = self.config
        self.bag = nn.EmbeddingBag(c.vocab_size + c.bigram_buckets, dim, mode="mean", padding_idx=0, sparse=sparse)
        nn.init.uniform_(self.bag.weight, -1.0 / dim, 1.0 / dim)
        with torch.no_grad():
            self.bag.weight[0].zero_()

    def _keras_init(self) -> None:
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        for module in self.modules():
            if isinstance(module, nn.LSTM):
                _keras_init_lstm(module)
            elif isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def load_pretrained(self, vectors: torch.Tensor, found: torch.Tensor) -> None:
        """Copy ``vectors[i]`` into embedding row i where ``found[i]`` (other rows keep their initialisation).

        For ``linear`` the word rows of the bag are the embedding (fastText's ``-pretrainedVectors``)."""
        weight = self.bag.weight[: self.config.vocab_size] if self.config.arch == "linear" else self.embedding.weight
        if vectors.shape != weight.shape:
            raise ConfigError(
                f"pretrained vectors have dimension {vectors.shape[1]}, the model's embed_dim is "
                f"{weight.shape[1]}; set model.embed_dim={vectors.shape[1]}"
            )
        with torch.no_grad():
            weight[found] = vectors[found].to(weight.dtype)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits: (B,) for the sigmoid output, (B, C) for softmax."""
        if self.config.arch == "sparse-lr":
            doc, rows, values = self.sparse_features(ids, lengths)
            counts = torch.bincount(doc, minlength=ids.shape[0])  # (B,) features per text
            logits = self.coef(rows, torch.cumsum(counts, 0) - counts, per_sample_weights=values) + self.intercept
            return logits.squeeze(-1) if self.sigmoid_out else logits  # (B,) or (B, C)
        if self.config.arch == "linear":
            rows = self.ngram_ids(ids, lengths)  # (B, 2T-1)
            # the bag reads only the real n-grams (a flat list + offsets), not the padding of the batch's longest text
            keep = rows != 0
            counts = keep.sum(1)  # (B,)
            h = self.bag(rows[keep], torch.cumsum(counts, 0) - counts)  # (B, E): mean of the word and bigram rows
            logits = self.out(self.drop(h))
            return logits.squeeze(-1) if self.sigmoid_out else logits
        x = self.embed_drop(self.embedding(ids))  # (B, T, E)
        if self.config.arch == "stacked-lstm":
            for lstm in self.lstms:
                x, _ = lstm(x)  # (B, T, H_i)
            h = x[:, -1]  # Keras' return_sequences=False: the state after the last (possibly padding) step
            if self.dense is not None:
                h = F.relu(self.dense(h))  # (B, dense_dim)
        else:
            out, h_n = self.lstm(x, lengths)  # (B, T, 2H), (2 * num_layers, B, H)
            mask = (torch.arange(out.shape[1], device=out.device)[None, :] < lengths.to(out.device)[:, None]).unsqueeze(-1)
            pool = self.config.pooling
            if pool == "last":
                h = torch.cat([h_n[-2], h_n[-1]], dim=-1)  # (B, 2H) final forward and backward states
            else:
                mean = (out * mask).sum(1) / mask.sum(1).clamp(min=1)
                mx = out.masked_fill(~mask, float("-inf")).max(1).values
                h = {"max": mx, "mean": mean}.get(pool, torch.cat([mx, mean], dim=-1) if pool == "maxmean" else mean)
            if self.config.bag_dim:
                h = torch.cat([h, self.bag(self.ngram_ids(ids, lengths))], dim=-1)  # (B, feat + bag_dim)
        logits = self.out(self.drop(h))
        return logits.squeeze(-1) if self.sigmoid_out else logits

    def ngram_ids(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T + T - 1) rows of the n-gram bag: the word ids, then the hashed bigrams, 0 where there are none.

        The bigram (a, b) goes to row ``V + (a * 1000003 + b) mod buckets``; padding and positions past each
        text's length map to row 0, which the mean leaves out."""
        c = self.config
        lengths = lengths.to(ids.device)[:, None]
        words = ids.long().masked_fill(torch.arange(ids.shape[1], device=ids.device)[None, :] >= lengths, 0)  # (B, T)
        if not c.bigram_buckets or ids.shape[1] < 2:
            return words
        pairs = (words[:, :-1] * 1_000_003 + words[:, 1:]) % c.bigram_buckets + c.vocab_size  # (B, T-1)
        valid = torch.arange(1, ids.shape[1], device=ids.device)[None, :] < lengths  # both words inside the text
        return torch.cat([words, pairs.masked_fill(~valid, 0)], dim=1)

    # ------------------------------------------------------------------------------------ sparse-lr
    def set_char_table(self, offsets: torch.Tensor, rows: torch.Tensor) -> None:
        """Install the word -> character n-gram rows table (:func:`char_ngram_table`)."""
        with torch.no_grad():
            self.char_offsets.copy_(offsets)
            self.char_rows.copy_(rows)

    def count_features(self, ids: torch.Tensor, lengths: torch.Tensor):
        """(doc (N,), row (N,), count (N,)): every distinct feature of every text of the batch and how often it
        occurs, sorted by text then row (see the module docstring for the rows)."""
        c = self.config
        n_docs, width = ids.shape
        pos = torch.arange(width, device=ids.device)
        lengths = lengths.to(ids.device)
        words = ids.long().masked_fill(pos[None, :] >= lengths[:, None], 0)  # (B, T)
        docs = torch.arange(n_docs, device=ids.device)[:, None].expand(n_docs, width)  # (B, T)
        keep = words != 0
        doc_parts, row_parts = [docs[keep]], [words[keep]]
        h = words
        for n in range(2, c.ngrams + 1):
            if width < n:
                break
            h = (h[:, :-1] * 1_000_003 + words[:, n - 1 :]) % _HASH_MOD  # (B, T-n+1): the n-gram starting at each i
            valid = pos[None, : width - n + 1] + n <= lengths[:, None]
            doc_parts.append(docs[:, : width - n + 1][valid])
            row_parts.append(h[valid] % c.bigram_buckets + c.vocab_size)
        if c.char_ngrams:
            w = words[keep]
            start, per_word = self.char_offsets[w], self.char_offsets[w + 1] - self.char_offsets[w]
            total = int(per_word.sum())
            first = torch.cumsum(per_word, 0) - per_word
            idx = torch.repeat_interleave(start - first, per_word) + torch.arange(total, device=ids.device)
            doc_parts.append(torch.repeat_interleave(docs[keep], per_word))
            row_parts.append(self.char_rows[idx])
        key = torch.cat(doc_parts) * self.num_features + torch.cat(row_parts)
        key, count = torch.unique(key, sorted=True, return_counts=True)
        return key // self.num_features, key % self.num_features, count

    def feature_values(self, doc: torch.Tensor, row: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """The value of each (doc, row) feature: tf (binary or sublinear) x feature_weight, L2-normalised per doc."""
        c = self.config
        values = torch.ones(count.shape, dtype=torch.float64, device=count.device)
        if c.tf == "sublinear":
            values = values + torch.log(count.double())
        values = values * self.feature_weight[row].double()
        if c.normalize:
            n_docs = int(doc.max()) + 1 if doc.numel() else 0
            norm = torch.zeros(n_docs, dtype=torch.float64, device=doc.device).index_add_(0, doc, values * values)
            values = values / norm.sqrt().clamp(min=1e-12)[doc]
        return values

    def sparse_features(self, ids: torch.Tensor, lengths: torch.Tensor):
        """(doc, row, value) of every distinct feature of the batch's texts, values as the weights' dtype."""
        doc, row, count = self.count_features(ids, lengths)
        return doc, row, self.feature_values(doc, row, count).to(self.coef.weight.dtype)

    def fit_weighting(self, doc: torch.Tensor, row: torch.Tensor, labels: torch.Tensor) -> None:
        """Set ``feature_weight`` from the training features (:meth:`count_features` of every training text,
        ``labels`` (n_docs,) class indices): the smoothed IDF and/or the NB log-count ratio, else ones."""
        c = self.config
        weight = torch.ones(self.num_features, dtype=torch.float64)
        df = torch.bincount(row, minlength=self.num_features).double()
        if c.idf:
            weight *= torch.log((1.0 + labels.numel()) / (1.0 + df)) + 1.0
        if c.nb:
            if c.num_classes != 2:
                raise ConfigError(f"model.nb needs two classes, the data have {c.num_classes}; use model.idf instead")
            positive = labels[doc] == 1
            p = c.nb_alpha + torch.bincount(row[positive], minlength=self.num_features).double()
            q = c.nb_alpha + torch.bincount(row[~positive], minlength=self.num_features).double()
            weight *= torch.log(p / p.sum()) - torch.log(q / q.sum())
        weight[df < c.min_df] = 0.0
        with torch.no_grad():
            self.feature_weight.copy_(weight.float())

    def fit_lbfgs(self, doc: torch.Tensor, row: torch.Tensor, values: torch.Tensor, labels: torch.Tensor) -> dict:
        """Fit ``coef`` and ``intercept`` to the optimum of ``sum_i loss_i + |W|^2 / (2 C)`` on the features
        (doc, row, value) of ``labels.numel()`` texts: full-batch L-BFGS (strong Wolfe) in float64 on the objective
        divided by the number of texts, from zero. Returns iterations, function evaluations, the features fitted and the final
        objective and gradient."""
        c = self.config
        n = labels.numel()
        keep = values != 0  # features dropped by min_df (weight 0)
        doc, row, values = doc[keep], row[keep], values[keep].double()
        # only the features that occur in training can get a non-zero weight: fit in their compressed index space
        active, local = _compress(row, self.num_features)
        x, x_t = _csr_pair(doc, local, values, n, active.numel())  # (N, A) and its transpose (A, N)
        out_dim = self.coef.weight.shape[1]
        w = torch.zeros(active.numel(), out_dim, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(out_dim, dtype=torch.float64, requires_grad=True)
        if self.sigmoid_out:
            target = labels.double()[:, None]  # (N, 1)
        else:
            target = F.one_hot(labels, out_dim).double()  # (N, C)

        def objective():
            with torch.no_grad():
                z = _csr_matmul(x, w) + b  # (N, out)
                if self.sigmoid_out:
                    loss = (F.softplus(z) - target * z).sum()
                    g = torch.sigmoid(z) - target
                else:
                    loss = (torch.logsumexp(z, 1) - (target * z).sum(1)).sum()
                    g = torch.softmax(z, 1) - target
                w.grad = (_csr_matmul(x_t, g) + w / c.C) / n  # (A, out)
                b.grad = g.sum(0) / n
                return (loss + (w * w).sum() / (2 * c.C)) / n

        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=c.max_iter, max_eval=2 * c.max_iter, tolerance_grad=c.tol,
                                tolerance_change=1e-12, history_size=10, line_search_fn="strong_wolfe")
        opt.step(objective)
        final = float(objective())
        state = opt.state[w]
        with torch.no_grad():
            self.coef.weight.zero_()
            self.coef.weight[active] = w.float()
            self.intercept.copy_(b.float())
        grad = max(float(w.grad.abs().max()), float(b.grad.abs().max()))
        return {"iterations": int(state.get("n_iter", 0)), "evaluations": int(state.get("func_evals", 0)),
                "objective": final, "grad_max": grad, "converged": grad <= c.tol, "features": int(active.numel())}

    def probabilities(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, C) class probabilities."""
        logits = self.forward(ids, lengths)
        if self.sigmoid_out:
            p = torch.sigmoid(logits)
            return torch.stack([1 - p, p], dim=-1)
        return torch.softmax(logits, dim=-1)

    def loss(self, batch) -> dict:
        """``batch`` has ``ids`` (B, T), ``lengths`` (B,) and ``labels`` (B,) (lmlab.data.classification's)."""
        logits = self.forward(batch.ids, batch.lengths)
        if self.sigmoid_out:
            loss = F.binary_cross_entropy_with_logits(logits, batch.labels.float())
            pred = (logits > 0).long()
        else:
            loss = F.cross_entropy(logits, batch.labels)
            pred = logits.argmax(-1)
        acc = (pred == batch.labels).float().mean()
        return {"loss": loss, "accuracy": acc, "n": int(batch.labels.numel())}


    def _sparse_sgd_step(self, batch, optimizers, trainer) -> dict:
        """One step of ``linear`` with ``sparse``: backward; when ``train.grad_clip`` > 0 the gradient norm over the
        sparse bag rows and the dense output layer, clipped as the trainer does; then the SGD step.

        The trainer has set this step's learning rate on the optimizer; the trainer's own clipping cannot read a
        sparse gradient, hence this hook."""
        for opt in optimizers:
            for group in opt.param_groups:
                if not isinstance(opt, torch.optim.SGD) or group.get("momentum", 0) or group.get("weight_decay", 0):
                    raise ConfigError(
                        "model.sparse needs plain SGD: set train.optimizer=sgd, train.momentum=0 and "
                        "train.weight_decay=0 (or model.sparse=false)"
                    )
        out = self.loss(batch)
        out["loss"].backward()
        clip = trainer.config.grad_clip
        if clip > 0:
            # coalescing (one value row per touched bag row) costs a sort: only done when the norm is needed; SGD adds
            # an uncoalesced gradient as it is (duplicate rows summed), and the trainer checks that the loss is finite
            norms = []
            for p in self.parameters():
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    p.grad = p.grad.coalesce()
                    norms.append(torch.linalg.vector_norm(p.grad.values()))
                else:
                    norms.append(torch.linalg.vector_norm(p.grad))
            norm = torch.linalg.vector_norm(torch.stack(norms))
            if not torch.isfinite(norm):
                raise TrainingError(
                    f"the gradient norm became {norm.item()} at step {trainer.state.step + 1}; "
                    "lower train.lr or set train.grad_clip (e.g. 1.0)"
                )
            if norm > clip:
                for p in self.parameters():
                    if p.grad is not None:
                        p.grad.mul_(clip / (norm + 1e-6))
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
        out["loss"] = out["loss"].detach()
        return out


def _csr_pair(doc: torch.Tensor, col: torch.Tensor, values: torch.Tensor, n_rows: int, n_cols: int):
    """The sparse matrix with ``values`` at (doc, col) -- entries sorted by doc, then col, no duplicates -- as a
    CSR tensor, and its transpose as another CSR tensor (a CSR mat-vec is ~5x faster than EmbeddingBag on a CPU)."""

    def csr(rows, cols, vals, shape):
        crow = torch.zeros(shape[0] + 1, dtype=torch.long)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": the mat-vec is all we use
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow, cols, vals, shape, check_invariants=False)

    order = torch.argsort(col * n_rows + doc)
    return csr(doc, col, values, (n_rows, n_cols)), csr(col[order], doc[order], values[order], (n_cols, n_rows))


def _compress(row: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(row, return_inverse=True)`` for ids below ``size``, by a presence table instead of a sort:
    (the distinct ids ascending, each entry's index among them)."""
    present = torch.zeros(size, dtype=torch.bool, device=row.device)
    present[row] = True
    active = present.nonzero().squeeze(1)
    index = torch.empty(size, dtype=torch.long, device=row.device)
    index[active] = torch.arange(active.numel(), device=row.device)
    return active, index[row]


def _csr_matmul(x: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return x @ dense


def keras_parameter_count(config: ClassifierConfig) -> int:
    """Trainable parameters of the equivalent Keras model (one bias per LSTM gate)."""
    c = config
    total = c.vocab_size * c.embed_dim
    dims = [c.embed_dim, *c.lstm_dims]
    for i in range(len(c.lstm_dims)):
        total += 4 * (dims[i] * dims[i + 1] + dims[i + 1] * dims[i + 1] + dims[i + 1])
    feat = c.lstm_dims[-1]
    if c.dense_dim:
        total += feat * c.dense_dim + c.dense_dim
        feat = c.dense_dim
    out = 1 if (c.binary_sigmoid and c.num_classes == 2) else c.num_classes
    return total + feat * out + out
