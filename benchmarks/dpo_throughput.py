"""DPO throughput and peak memory: ``train_dpo`` against a bare PyTorch loop and TRL's ``DPOTrainer``.

    python benchmarks/dpo_throughput.py                  # the README table: 1 thread, 1 and 3 epochs
    python benchmarks/dpo_throughput.py --epochs 3 --pairs 2000 --batch-size 64

Every trainer starts from the same model (the zoo's ``sft`` checkpoint), sees the same
preference pairs (sampled from it and labelled by the world's annotator), uses the same
batch size, learning rate, β and number of epochs, and takes its reference log-probs from
that same starting model. Each runs in its own process, so its peak resident memory is its
own. Timings cover everything a user waits for once model and data are loaded:

- ``train_dpo``: encoding, the one reference pass, and training;
- ``bare loop``: the ceiling. The batches are encoded, length-grouped and padded before the
  clock starts; then a reference pass over them and a plain forward/backward/AdamW loop,
  with the package's own ``sequence_logprobs`` and ``dpo_loss``. The gap to it is what the
  trainer itself costs;
- ``TRL DPOTrainer``: trainer construction (tokenization) and ``train()``. The comparison that
  the targets refer to runs it in float32 like the others (``bf16=False``, and
  ``gradient_checkpointing=False``, which only makes it faster), with a reference forward pass
  every step (TRL's default) or ``precompute_ref_log_probs=True``. A last row keeps all of TRL's
  defaults, which on CPU include bf16 autocast and gradient checkpointing, so it computes in
  another precision. Only when ``trl`` is importable: it is no dependency of the package.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec

import torch

from rlhf_edu import World, zoo
from rlhf_edu.core.logprobs import sequence_logprobs
from rlhf_edu.core.preferences import build_preference_dataset, encode_pairs, pair_loader
from rlhf_edu.direct_alignment import DPOConfig, dpo_loss, train_dpo

TRAINERS = (
    "train_dpo",
    "bare loop",
    "TRL DPOTrainer, fp32",
    "TRL DPOTrainer, fp32, precomputed ref",
    "TRL DPOTrainer, its defaults (bf16 autocast, gradient checkpointing)",
)
LEARNING_RATE, BETA = 5e-4, 0.1


def load_model_and_data(num_pairs: int, device: str):
    model, tokenizer = zoo.load("sft", device=device)
    dataset = build_preference_dataset(World(seed=0), model, tokenizer, n=num_pairs, seed=0)
    return model, tokenizer, dataset.select_columns(["prompt", "chosen", "rejected"])


def run_train_dpo(model, tokenizer, dataset, args) -> None:
    config = DPOConfig(
        learning_rate=LEARNING_RATE, beta=BETA, batch_size=args.batch_size, num_epochs=args.epochs, progress=False
    )
    train_dpo(model, tokenizer, dataset, config)


def prepare_bare_batches(model, tokenizer, dataset, args) -> list[dict[str, torch.Tensor]]:
    """The exact batches train_dpo would use, encoded, grouped and padded ahead of the clock."""
    config = DPOConfig(batch_size=args.batch_size, progress=False)
    pairs = encode_pairs(tokenizer, dataset, model.config.max_position_embeddings)
    loader = pair_loader(pairs, tokenizer.pad_token_id, config)
    device = next(model.parameters()).device
    return [{k: v.to(device) for k, v in batch.items()} for batch in loader]


def run_bare_loop(model, batches: list[dict[str, torch.Tensor]], args) -> None:
    def logps(batch):
        return sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])

    with torch.no_grad():
        references = [logps(batch).chunk(2) for batch in batches]
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    model.train()
    for _ in range(args.epochs):
        for batch, (ref_chosen, ref_rejected) in zip(batches, references):
            chosen, rejected = logps(batch).chunk(2)
            losses, _, _ = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, BETA)
            optimizer.zero_grad(set_to_none=True)
            losses.mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()


def run_trl(model, tokenizer, dataset, args, trainer: str) -> None:
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    fp32 = {} if "defaults" in trainer else {"bf16": False, "gradient_checkpointing": False}
    with tempfile.TemporaryDirectory() as output_dir:
        config = TRLConfig(
            output_dir=output_dir,
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            learning_rate=LEARNING_RATE,
            beta=BETA,
            max_length=model.config.max_position_embeddings,
            precompute_ref_log_probs="precomputed" in trainer,
            precompute_ref_batch_size=64,
            lr_scheduler_type="constant",
            max_grad_norm=1.0,
            weight_decay=0.0,
            report_to=[],
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=1,
            use_cpu=args.device == "cpu",
            dataloader_num_workers=0,
            seed=0,
            **fp32,
        )
        trainer = DPOTrainer(
            model=model, ref_model=copy.deepcopy(model), args=config, train_dataset=dataset, processing_class=tokenizer
        )
        trainer.train()


def measure(trainer: str, args) -> dict:
    """Run one trainer in this process; return its wall time and memory."""
    torch.set_num_threads(args.threads)
    model, tokenizer, dataset = load_model_and_data(args.pairs, args.device)
    batches = prepare_bare_batches(model, tokenizer, dataset, args) if trainer == "bare loop" else None
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start, start_cpu = time.perf_counter(), time.process_time()
    if trainer == "train_dpo":
        run_train_dpo(model, tokenizer, dataset, args)
    elif trainer == "bare loop":
        run_bare_loop(model, batches, args)
    else:
        run_trl(model, tokenizer, dataset, args, trainer)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    result = {
        "trainer": trainer,
        "pairs": len(dataset),
        "epochs": args.epochs,
        "seconds": seconds,
        "pairs_per_s": len(dataset) * args.epochs / seconds,
        "pairs_per_cpu_s": len(dataset) * args.epochs / cpu_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loaded_rss_mib": loaded_rss,
    }
    if args.device == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_in_subprocess(trainer: str, args) -> dict:
    command = [
        sys.executable,
        __file__,
        "--only",
        trainer,
        "--pairs",
        str(args.pairs),
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    """A markdown table; the ratio column compares throughput per CPU-second, which a busy machine does not skew."""
    ours = next(r for r in results if r["trainer"] == "train_dpo")["pairs_per_cpu_s"]
    memory = "peak CUDA MiB" if "peak_cuda_mib" in results[0] else "peak RSS MiB (after loading)"
    lines = [
        f"| trainer | epochs | pairs per CPU-second | pairs/s (wall) | train_dpo ÷ this | {memory} |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        peak = (
            f"{r['peak_cuda_mib']:.0f}"
            if "peak_cuda_mib" in r
            else f"{r['peak_rss_mib']:.0f} ({r['loaded_rss_mib']:.0f})"
        )
        lines.append(
            f"| {r['trainer']} | {r['epochs']} | {r['pairs_per_cpu_s']:.0f} | {r['pairs_per_s']:.0f} | "
            f"{ours / r['pairs_per_cpu_s']:.2f} | {peak} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000, help="prompts to sample preference pairs for")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for every trainer")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="keep each trainer's fastest of this many runs")
    parser.add_argument("--only", choices=TRAINERS, help=argparse.SUPPRESS)  # one run, JSON out
    args = parser.parse_args()
    if args.only:
        args.epochs = args.epochs[0]
        print(json.dumps(measure(args.only, args)))
        return
    trainers = TRAINERS if find_spec("trl") else TRAINERS[:2]
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, device {args.device}, "
        f"{args.threads} thread(s), {args.pairs} prompts, batch size {args.batch_size}"
    )
    for epochs in args.epochs:
        runs = {trainer: [] for trainer in trainers}
        for _ in range(args.repeats):  # round robin, so a busy spell on the machine hits every trainer alike
            for trainer in trainers:
                runs[trainer].append(run_in_subprocess(trainer, argparse.Namespace(**{**vars(args), "epochs": epochs})))
        print(table([max(runs[t], key=lambda r: r["pairs_per_cpu_s"]) for t in trainers]), flush=True)


if __name__ == "__main__":
    main()
