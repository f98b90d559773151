"""Runs fed-mammoth's ``main.py`` (the authors' code, a separate checkout) on the CPU,
with the patches it needs there and a clock per phase; run by bench_vs_fed_mammoth.py
in fed-mammoth's own venv, never imported by lorm.

    python _fed_mammoth_runner.py FED_MAMMOTH_DIR PHASES_JSON MODE -- <main.py arguments>

MODE is ``float32`` (matmul precision "highest"; pass ``--precision=32-true`` too) or
``default`` (their own ``torch.set_float32_matmul_precision("medium")`` left as it is).
Nothing in their files is changed: each patch below replaces a function or a class
attribute in this process, and :data:`PATCHES` says why (bench_vs_fed_mammoth.py
copies it into the results).
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace

# (what is replaced, where their code calls it, why): the results file lists these.
PATCHES = [
    ("a stub module _networks.vit_powder (ViTZoo: an empty class)",
     "_models/coda_lwf.py (from _networks.vit_powder import ViTZoo); _models/__init__.py imports every model file",
     ("the public repository has no _networks/vit_powder.py, so importing _models fails for every "
     "model (LoRM included); CODA-LwF is not run")),
    ("transformers.AutoTokenizer.from_pretrained -> None where the hub is unreachable",
     ("_datasets/seq_oos.py SequentialOOS, _datasets/seq_20newsgroup.py (class bodies: "
     "AutoTokenizer.from_pretrained(\"t5-small\")); _datasets/__init__.py imports every data set file"),
     "no internet here: importing _datasets would fail; the text data sets are not run"),
    ("timm.create_model: pretrained=False forced",
     "_networks/vit.py VisionTransformer.__init__ (timm.create_model(model_name, pretrained=pretrained))",
     ("random weights: no internet for the hub here, and --pretrained=False cannot be passed "
     "(utils/args.py add_args gives it type=bool, so the string 'False' is true)")),
    ("torchvision.datasets.cifar.check_integrity -> True",
     "_datasets/seq_cifar100.py SequentialCifar100.__init__ (CIFAR100(DATASET_PATH, download=True))",
     ("the CIFAR-100-format fixture's pickles are not the real archive's (their md5 differ), so "
     "torchvision would try to download it")),
    ("SequentialCifar100.N_TASKS = 2",
     "_datasets/seq_cifar100.py class attribute (10), read by main.py get_artifacts and utils/training.py train",
     "a 2-task run (the head gets 20 classes); there is no argument for it"),
    ("torch.cuda.get_device_properties -> an object with total_memory = 1",
     "_models/lorm.py LoRM.end_round_server (total_mem = torch.cuda.get_device_properties(0).total_memory)",
     "read unconditionally; raises without a CUDA device (only used to decide empty_cache)"),
    ("lightning.Fabric: strategy 'dp' -> 'auto' on the CPU",
     "main.py main() (L.Fabric(accelerator=device, devices=1, strategy=\"dp\", ...))",
     ("Lightning turns 'dp' on the CPU into DDP, which refuses the frozen backbone ('DistributedDataParallel "
     "is not needed when a module doesn't have any parameter that requires a gradient'); 'auto' is "
     "the single-device strategy, what 'dp' is on one GPU")),
    ("float32 mode only: torch.set_float32_matmul_precision -> 'highest'",
     "main.py main() (torch.set_float32_matmul_precision(\"medium\"), unconditional)",
     ("their float32 run: 'medium' lets float32 matmuls run in bfloat16 on a CPU with bf16 "
     "(with --precision=32-true for Lightning Fabric, an argument)")),
]

PHASES = ("train", "stats", "merge", "eval")


class PhaseClock:
    """Seconds per phase, from wrappers around their functions (never nested)."""

    def __init__(self) -> None:
        self.seconds = {p: 0.0 for p in PHASES}
        self.counts = {p: 0 for p in PHASES}
        self.train_start: float | None = None

    def wrap(self, owner, name: str, phase: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start
                self.counts[phase] += 1

        setattr(owner, name, timed)

    def wrap_training(self, model_class) -> None:
        """Training: from a client's begin_round_client to its end_round_client (their
        loop in utils/training.py train: batches loaded, observe, end_epoch)."""
        begin, end = model_class.begin_round_client, model_class.end_round_client

        def begin_round_client(*args, **kwargs):
            self.train_start = time.perf_counter()
            return begin(*args, **kwargs)

        def end_round_client(*args, **kwargs):
            start = time.perf_counter()
            self.seconds["train"] += start - self.train_start
            self.counts["train"] += 1
            try:
                return end(*args, **kwargs)   # the round's Gram pass
            finally:
                self.seconds["stats"] += time.perf_counter() - start
                self.counts["stats"] += 1

        model_class.begin_round_client, model_class.end_round_client = begin_round_client, end_round_client


def stub_missing_modules() -> None:
    """Before their packages are imported: the files they import that are missing/offline."""
    import transformers

    stub = types.ModuleType("_networks.vit_powder")
    stub.ViTZoo = type("ViTZoo", (), {})
    sys.modules["_networks.vit_powder"] = stub
    from_pretrained = transformers.AutoTokenizer.from_pretrained

    def offline_tokenizer(*args, **kwargs):
        try:
            return from_pretrained(*args, **kwargs)
        except OSError:
            return None

    transformers.AutoTokenizer.from_pretrained = offline_tokenizer


def apply_patches(mode: str) -> None:
    import lightning
    import timm
    import torch
    import torchvision.datasets.cifar as tv_cifar

    create = timm.create_model

    def create_model(*args, **kwargs):
        kwargs["pretrained"] = False
        return create(*args, **kwargs)

    timm.create_model = create_model

    class Fabric(lightning.Fabric):
        def __init__(self, *args, **kwargs):
            if kwargs.get("accelerator") == "cpu" and kwargs.get("strategy") == "dp":
                kwargs["strategy"] = "auto"
            super().__init__(*args, **kwargs)

    lightning.Fabric = Fabric
    tv_cifar.check_integrity = lambda *args, **kwargs: True
    torch.cuda.get_device_properties = lambda *args, **kwargs: SimpleNamespace(total_memory=1)
    if mode == "float32":
        set_precision = torch.set_float32_matmul_precision
        torch.set_float32_matmul_precision = lambda _level: set_precision("highest")
    from _datasets.seq_cifar100 import SequentialCifar100

    SequentialCifar100.N_TASKS = 2


def install_clock(clock: PhaseClock) -> None:
    from _models.lorm import LoRM
    from utils import training

    clock.wrap_training(LoRM)
    clock.wrap(LoRM, "end_task_client", "stats")      # the end-of-task Gram pass
    clock.wrap(LoRM, "end_round_server", "merge")
    clock.wrap(LoRM, "end_task_server", "merge")
    clock.wrap(training, "evaluate", "eval")


def main() -> None:
    start = time.perf_counter()
    src, phases_json, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    assert mode in ("float32", "default") and sys.argv[4] == "--"
    sys.path.insert(0, src)
    stub_missing_modules()
    apply_patches(mode)
    clock = PhaseClock()
    install_clock(clock)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    sys.argv = [str(Path(src) / "main.py"), *sys.argv[5:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
    phases_json.write_text(json.dumps({
        "seconds": clock.seconds, "calls": clock.counts,
        "in_process_seconds": time.perf_counter() - start,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
