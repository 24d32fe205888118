"""A text classifier on a sentence encoder: the encoder's pooled sentence vector and a linear head.

``SentenceClassifier(encoder, num_classes)`` -> ``forward(input_ids, attention_mask,
token_type_ids=None) -> (B, K) logits``: the teacher for text classification, and, built on a
layer-dropped copy (:func:`layer_dropped`), a student initialised from it. The pooled vector is
taken before the encoder's L2 normalisation (its norm carries information a classifier can use).

    classifier, tokenizer = SentenceClassifier.from_folder(minilm_folder(), num_classes=4)
    train = text_classification_data("train.csv", tokenizer=tokenizer, max_length=128)
    fine_tune(classifier, train, epochs=2, output_dir="runs/teacher")     # distill.distil on labels
    save_classifier(classifier, tokenizer, "teacher")                      # a folder from_folder reads back
    logits = predict_logits(classifier, test)                              # (N, K), length-sorted batches

Text batches waste most of their compute on padding when a whole file is padded to its longest
text (AG News: median 51 tokens, padded to 128): :func:`trimmed_loader` gives ``distill.distil``
batches cut to their own longest row, and :func:`predict_logits` runs inference in batches of
similar length.
"""
from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.models.hf import SentenceEncoder

HEAD_FILE = "classifier_head.safetensors"
HEAD_CONFIG = "classifier.json"


class SentenceClassifier(nn.Module):
    """(B, L) token ids (+ mask) -> (B, K) logits. Module paths: ``encoder`` (a SentenceEncoder, its
    transformer at ``encoder.model``), ``dropout``, ``head``.

    Args:
        encoder: a :class:`SentenceEncoder` (e.g. ``SentenceEncoder.from_folder(minilm_folder())[0]``);
            copied, so the original stays as it was.
        num_classes: K.
        dropout: on the pooled vector, during training.
    """

    def __init__(self, encoder: SentenceEncoder, num_classes: int, *, dropout: float = 0.1) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        width = encoder.embedding_dim
        if width is None:
            raise ValueError("the encoder does not say its width (config.hidden_size); give a Hugging Face encoder")
        self.encoder = copy.deepcopy(encoder)
        self.encoder.normalize = False
        self.encoder.requires_grad_(True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)
        self.num_classes = num_classes
        self.max_length = encoder.max_length
        self.do_lower_case = encoder.do_lower_case

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        return self.head(self.dropout(self.encoder(input_ids, attention_mask, token_type_ids)))

    def features(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """(B, D) pooled sentence vectors (what the head reads): the encoder's embeddings before L2 normalisation."""
        return self.encoder(input_ids, attention_mask, token_type_ids)

    @classmethod
    def from_folder(cls, path: str | os.PathLike, num_classes: int | None = None, *, max_length: int | None = None,
                    pooling: str | None = None, dropout: float = 0.1):
        """``(classifier, tokenizer)`` from a folder, in eval mode:

        - a folder written by :func:`save_classifier` (the head restored; ``num_classes`` read from it);
        - a sentence-transformers folder (pooling from its modules.json) or a plain Hugging Face encoder
          folder (``pooling`` defaults to ``"mean"``): a new, untrained head of ``num_classes`` outputs.

        Weights are read from safetensors only; nothing is downloaded and no remote code runs
        (:meth:`SentenceEncoder.from_folder`).
        """
        folder = Path(path)
        head_config = folder / HEAD_CONFIG
        saved = head_config.is_file()
        if saved:
            config = json.loads(head_config.read_text(encoding="utf-8"))
            if num_classes is not None and num_classes != config["num_classes"]:
                raise ValueError(f"{folder} holds a {config['num_classes']}-class classifier; num_classes={num_classes} "
                                 "disagrees (leave it unset to use the saved head)")
            num_classes, dropout = int(config["num_classes"]), float(config.get("dropout", dropout))
        if num_classes is None:
            raise ValueError(f"{folder} is an encoder without a classifier head: give num_classes (K) for a new head")
        has_modules = (folder / "modules.json").is_file()
        encoder, tokenizer = SentenceEncoder.from_folder(folder, max_length=max_length,
                                                         pooling=pooling or (None if has_modules else "mean"))
        classifier = cls(encoder, num_classes, dropout=dropout)
        if saved:
            from safetensors.torch import load_file

            weights = load_file(str(folder / HEAD_FILE))
            classifier.head.load_state_dict(weights)
        return classifier.eval(), tokenizer


def save_classifier(classifier: SentenceClassifier, tokenizer, folder: str | os.PathLike, *,
                    classes: list[str] | None = None) -> Path:
    """Write ``classifier`` as a sentence-transformers folder (its encoder, without normalisation, and the
    tokenizer) plus ``classifier_head.safetensors`` and ``classifier.json``; read back by
    :meth:`SentenceClassifier.from_folder`. Returns the folder."""
    from safetensors.torch import save_file

    from distill.models.hf import save_sentence_encoder

    folder = Path(folder)
    save_sentence_encoder(classifier.encoder, tokenizer, folder)
    save_file({key: value.detach().contiguous().cpu() for key, value in classifier.head.state_dict().items()},
              str(folder / HEAD_FILE))
    (folder / HEAD_CONFIG).write_text(json.dumps({"num_classes": classifier.num_classes,
                                                  "dropout": classifier.dropout.p, "classes": classes}, indent=2))
    return folder


def layer_dropped(classifier: SentenceClassifier, keep: list[int]) -> SentenceClassifier:
    """A copy of ``classifier`` whose encoder keeps only the transformer blocks ``keep``, their weights (and the
    head) copied from it: :func:`distill.models.layer_drop.drop_layers` on the encoder, so its config's layer
    count follows. The classifier itself is not changed."""
    from distill.models.layer_drop import drop_layers

    encoder = classifier.encoder
    classifier.encoder = None  # not copied twice
    try:
        student = copy.deepcopy(classifier)
    finally:
        classifier.encoder = encoder
    student.encoder = drop_layers(encoder, keep)
    return student


# ---------------------------------------------------------------------------------------------------
# batches of text without the padding: training and inference
# ---------------------------------------------------------------------------------------------------

def _inputs_and_targets(data: Any) -> tuple[dict[str, Tensor], Tensor | None]:
    inputs = getattr(data, "inputs", None)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Mapping):
        inputs, targets = data
    elif isinstance(inputs, Mapping):
        targets = getattr(data, "targets", None)
    elif isinstance(data, Mapping):
        inputs, targets = data, None
    else:
        raise TypeError(f"expected a TensorData of token batches, a dict of (N, L) tensors or (inputs, targets); "
                        f"got {type(data).__name__}")
    if "attention_mask" not in inputs:
        raise ValueError(f"text batches need an attention_mask beside input_ids (keys: {sorted(inputs)})")
    return dict(inputs), targets


def _trim(inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Columns after the last valid token of any row dropped (right padding)."""
    longest = max(int(inputs["attention_mask"].sum(1).max()), 1)
    return {key: value[:, :longest] for key, value in inputs.items()}


class TextRows(torch.utils.data.Dataset):
    """Rows of a padded text data set, for a DataLoader whose ``collate`` trims each batch to its longest row.

    Items are row indices; :meth:`collate` turns a list of them into what ``distill.distil`` reads
    (``{"input": {...}, "target": (B,)}``; no target for unlabelled data). ``num_classes`` (from
    ``classes`` or the targets) tells distil the class count; ``lengths`` are the rows' valid tokens.
    """

    def __init__(self, data: Any) -> None:
        self.inputs, self.targets = _inputs_and_targets(data)
        classes = getattr(data, "classes", None)
        self.num_classes = (len(classes) if classes else
                            int(self.targets.max()) + 1 if self.targets is not None and len(self.targets) else None)
        self.lengths = self.inputs["attention_mask"].sum(1)
        self.rows = len(self.lengths)

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int):
        return index

    def collate(self, indices: list[int]) -> dict[str, Any]:
        index = torch.as_tensor(indices, dtype=torch.int64)
        batch: dict[str, Any] = {"input": _trim({key: value[index] for key, value in self.inputs.items()})}
        if self.targets is not None:
            batch["target"] = self.targets[index]
        return batch


class LengthBuckets(torch.utils.data.Sampler):
    """Random batches of similar length: each epoch the rows are shuffled, cut into pools of ``pool`` batches,
    each pool sorted by length and cut into batches, and the batches shuffled. Seeded by ``(seed, epoch)``,
    the epoch counted by the sampler's own iterations, so a run repeats exactly (not a resume mid-run)."""

    def __init__(self, lengths: Tensor, batch_size: int, *, seed: int = 0, pool: int = 50,
                 drop_last: bool = True) -> None:
        self.lengths, self.batch_size, self.seed, self.pool, self.drop_last = lengths, batch_size, seed, pool, drop_last
        self.epoch = 0

    def __len__(self) -> int:
        rows = len(self.lengths)
        return rows // self.batch_size if self.drop_last else -(-rows // self.batch_size)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=generator)
        if self.drop_last:  # the rows left over go, not a short batch
            order = order[:len(self) * self.batch_size]
        batches = []
        step = self.pool * self.batch_size
        for start in range(0, len(order), step):
            chunk = order[start:start + step]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for index in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[index].tolist()


def trimmed_loader(data: Any, batch_size: int = 32, *, shuffle: bool = True, drop_last: bool = True,
                   buckets: bool = True, seed: int = 0):
    """A torch DataLoader over ``data`` (a TensorData of token batches, labelled or not) whose batches are cut
    to their longest row: the same values as the padded batches (the attention mask excludes padding), a
    fraction of the compute. ``buckets`` (with ``shuffle``) draws batches of similar length
    (:class:`LengthBuckets`, seeded by ``seed``); otherwise a RandomSampler, which distill re-seeds every epoch."""
    rows = TextRows(data)
    if shuffle and buckets:
        return torch.utils.data.DataLoader(rows, batch_sampler=LengthBuckets(rows.lengths, batch_size, seed=seed,
                                                                             drop_last=drop_last),
                                           collate_fn=rows.collate)
    return torch.utils.data.DataLoader(rows, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                       collate_fn=rows.collate)


@torch.inference_mode()
def predict_logits(model: nn.Module, data: Any, *, batch_size: int = 64) -> Tensor:
    """(N, K) float32 outputs of ``model`` for every row of ``data``, in the rows' order: rows sorted by length,
    each batch trimmed to its longest row, the model in eval mode (its mode restored afterwards)."""
    inputs, _ = _inputs_and_targets(data)
    lengths = inputs["attention_mask"].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    was_training = model.training
    model.eval()
    out: Tensor | None = None
    try:
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            logits = model(**_trim({key: value[index] for key, value in inputs.items()})).float()
            if out is None:
                out = torch.empty((len(order), *logits.shape[1:]), dtype=torch.float32)
            out[index] = logits
    finally:
        model.train(was_training)
    return out if out is not None else torch.zeros((0, 0))


def fine_tune(classifier: nn.Module, train: Any, *, epochs: int = 2, lr: float = 5e-5, batch_size: int = 32,
              warmup: float = 0.1, weight_decay: float = 0.01, freeze_embeddings: bool = True, seed: int = 0,
              output_dir: str | os.PathLike = "runs/fine_tune", overwrite: bool = False, progress: bool = True,
              threads: int | None = None, **distil_options: Any):
    """Fine-tune ``classifier`` on the labels of ``train`` (a TensorData of token batches) with
    ``distill.distil(None, ...)``: cross-entropy, AdamW, ``warmup`` (a fraction of the steps) then cosine decay,
    trimmed batches of similar length. ``freeze_embeddings`` keeps the encoder's word-embedding table (most of MiniLM's
    parameters, and most of the optimiser's work) as it is. Returns distil's result."""
    import distill

    if freeze_embeddings:
        table = getattr(getattr(getattr(classifier, "encoder", None), "model", None), "get_input_embeddings", None)
        if table is None:
            raise ValueError("freeze_embeddings: the model has no encoder.model.get_input_embeddings(); pass "
                             "freeze_embeddings=False")
        table().weight.requires_grad_(False)
    loader = trimmed_loader(train, batch_size, shuffle=True, drop_last=True, seed=seed)
    steps = epochs * len(loader)
    return distill.distil(None, classifier, loader, losses=[{"name": "cross_entropy"}], epochs=epochs, lr=lr,
                          weight_decay=weight_decay, schedule={"name": "cosine", "warmup_steps": int(warmup * steps)},
                          seed=seed, output_dir=output_dir, overwrite=overwrite, progress=progress, threads=threads,
                          measure_latency=False, **distil_options)


__all__ = ["LengthBuckets", "SentenceClassifier", "TextRows", "fine_tune", "layer_dropped", "predict_logits", "save_classifier",
           "trimmed_loader"]
