"""GRPO throughput and peak memory: ``train_policy_gradient`` against a bare PyTorch loop and TRL's ``GRPOTrainer``.

    python benchmarks/policy_gradient_throughput.py              # the README table: 1 and 2 threads, best of 5
    python benchmarks/policy_gradient_throughput.py --threads 1 --steps 40 --prompts-per-step 32

Every trainer starts from the same model (the zoo's ``sft`` checkpoint), takes the same
prompts (``World(seed=0).prompts``, the three families in equal shares, each prompt used
once), scores with the same reward (the world's gold reward), and uses the same
``num_generations``, ``max_completion_length``, batch (prompts per step × generations),
learning rate, constant schedule, gradient clipping and β = 0 (no reference model in the
loss). Sampling is plain: temperature 1, no top-k or top-p. The defaults, 20 steps of 16
prompts × 4 generations of at most 24 tokens, keep a run near 10 CPU-seconds. Each run
happens in a fresh process, so its peak resident memory is its own. Timings cover everything a user waits for
once model and prompts are loaded:

- ``train_policy_gradient``: the package's GRPO, ``PolicyGradientConfig(algorithm="grpo", beta=0.0)``;
- ``bare loop``: the ceiling. The prompts are rendered and tokenized before the clock starts;
  then, per step, one ``generate`` call for all prompts × generations, the gold reward on the
  decoded completions, group-normalised advantages, and one forward/backward/AdamW update on
  −A·log π averaged per sequence (what GRPO's clipped loss reduces to with one update per
  rollout). The gap to it is what the trainer itself costs;
- ``TRL GRPOTrainer, fp32``: trainer construction and ``train()``, with ``bf16=False`` and
  ``gradient_checkpointing=False`` so it computes in the same precision as the others, its
  ``loss_type="grpo"`` (the package's default aggregation), a constant learning rate, and
  transformers ``generate`` (no vLLM). Only when ``trl`` is importable: it is no dependency
  of the package.

Each run also reports where its CPU time goes: the ``generate`` calls themselves, the rest
of sampling (prompt rendering, tokenization, decoding, sampling log-probs), scoring, the
no-grad log-prob passes, the updates, and what is left. The sections are timed by wrapping
functions from outside (``model.generate``, the reward function, ``sample_rollouts``,
``token_logprobs``, ``Trainer.step``, ``AdamW.step``; TRL's ``_generate_and_score_completions``
and ``training_step``), never by changing the package.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
from rlhf_edu.core.world import message_text

TRAINERS = ("train_policy_gradient", "bare loop", "TRL GRPOTrainer, fp32")
SECTIONS = ("generate", "rest of sampling", "scoring", "no-grad log-probs", "update", "other")
LEARNING_RATE = 1e-4


# --- timing sections from outside ---------------------------------------------------------------
class Sections:
    """Exclusive CPU time per named section: time spent in a nested section counts only there."""

    def __init__(self):
        self.seconds = dict.fromkeys(SECTIONS, 0.0)
        self._nested: list[float] = []  # per open section, the time its nested sections took

    @contextlib.contextmanager
    def section(self, name: str):
        start = time.process_time()
        self._nested.append(0.0)
        try:
            yield
        finally:
            elapsed = time.process_time() - start
            self.seconds[name] += elapsed - self._nested.pop()
            if self._nested:
                self._nested[-1] += elapsed

    def wrap(self, name: str, fn, when=lambda: True):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            if not when():
                return fn(*args, **kwargs)
            with self.section(name):
                return fn(*args, **kwargs)

        return timed


def time_generate(model, sections: Sections) -> None:
    """Time every ``model.generate`` call (an instance attribute, so only this model's calls)."""
    model.generate = sections.wrap("generate", model.generate)


# --- the three trainers -----------------------------------------------------------------------------
def load_model_and_prompts(args):
    model, tokenizer = zoo.load("sft", device=args.device)
    world = World(seed=0)
    prompts = world.prompts(args.steps * args.prompts_per_step)
    return model, tokenizer, world, prompts


def run_train_policy_gradient(model, tokenizer, world, prompts, args, sections: Sections) -> int:
    """The package's GRPO; returns the number of completion tokens it sampled."""
    import rlhf_edu.policy_gradients as pg
    from rlhf_edu.core import training

    if hasattr(pg, "sample_rollouts"):
        pg.sample_rollouts = sections.wrap("rest of sampling", pg.sample_rollouts)
    if hasattr(pg, "token_logprobs"):  # only the no-grad passes: those with grad belong to the update
        pg.token_logprobs = sections.wrap(
            "no-grad log-probs", pg.token_logprobs, when=lambda: not torch.is_grad_enabled()
        )
    training.Trainer.step = sections.wrap("update", training.Trainer.step)
    time_generate(model, sections)
    reward_fn = sections.wrap("scoring", world.gold_reward)
    config = pg.PolicyGradientConfig(
        algorithm="grpo",
        beta=0.0,
        learning_rate=LEARNING_RATE,
        batch_size=args.prompts_per_step,
        num_generations=args.generations,
        max_completion_length=args.max_completion_length,
        num_steps=args.steps,
        progress=False,
    )
    history = pg.train_policy_gradient(model, tokenizer, prompts, reward_fn, config)
    rows = args.prompts_per_step * args.generations
    return round(sum(history["completions/mean_length"]) * rows)


def prepare_bare_batches(model, tokenizer, prompts, args) -> list[dict[str, torch.Tensor]]:
    """Each step's prompts, chat-rendered, repeated num_generations times and left-padded, ahead of the clock."""
    device = next(model.parameters()).device
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in prompts
    ]
    tokenizer.padding_side = "left"
    batches = []
    for start in range(0, len(prompts), args.prompts_per_step):
        step = [t for t in texts[start : start + args.prompts_per_step] for _ in range(args.generations)]
        inputs = tokenizer(step, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        batches.append(
            {
                **inputs,
                "prompts": [p for p in prompts[start : start + args.prompts_per_step] for _ in range(args.generations)],
            }
        )
    return batches


def run_bare_loop(model, tokenizer, world, batches, args, sections: Sections) -> int:
    """Generate, score, group-normalise, one AdamW update, per step; returns the completion tokens sampled."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=0.0)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    tokens = 0
    torch.manual_seed(0)
    for batch in batches:
        model.eval()
        with sections.section("generate"), torch.no_grad():
            sequences = model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                max_new_tokens=args.max_completion_length,
                pad_token_id=pad,
                eos_token_id=eos,
            )
        P = batch["input_ids"].shape[1]
        with sections.section("rest of sampling"):
            completion = sequences[:, P:]  # (B, N)
            is_eos = (completion == eos).long()
            mask = ((is_eos.cumsum(dim=1) - is_eos) == 0).long()  # up to and including the first end-of-turn token
            texts = tokenizer.batch_decode(completion * mask + pad * (1 - mask), skip_special_tokens=True)
        with sections.section("scoring"):
            rewards = torch.tensor(world.gold_reward(batch["prompts"], texts))
        with sections.section("update"):
            grouped = rewards.view(-1, args.generations)  # (P, G)
            advantages = (grouped - grouped.mean(dim=1, keepdim=True)) / (grouped.std(dim=1, keepdim=True) + 1e-4)
            attention = torch.cat([batch["attention_mask"], mask], dim=1)  # (B, P + N)
            model.train()
            logits = model(
                input_ids=sequences,
                attention_mask=attention,
                position_ids=(attention.cumsum(dim=1) - 1).clamp(min=0),
                logits_to_keep=completion.shape[1] + 1,
            ).logits[:, :-1]  # (B, N, V)
            logps = -torch.nn.functional.cross_entropy(logits.transpose(1, 2), completion, reduction="none")
            m = mask.float()
            per_sequence = -(advantages.flatten().unsqueeze(1) * logps * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
            optimizer.zero_grad(set_to_none=True)
            per_sequence.mean().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        tokens += int(mask.sum())
    model.eval()
    return tokens


def run_trl(model, tokenizer, world, prompts, args, sections: Sections) -> int:
    """TRL's GRPOTrainer in float32; returns the completion tokens it sampled (from its logged mean lengths)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    def gold_reward(prompts, completions, **kwargs):
        with sections.section("scoring"):  # conversational rows: score the text of the last message
            return world.gold_reward([message_text(p) for p in prompts], [message_text(c) for c in completions])

    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in prompts]})
    time_generate(model, sections)
    GRPOTrainer._generate_and_score_completions = sections.wrap(
        "rest of sampling", GRPOTrainer._generate_and_score_completions
    )
    GRPOTrainer.training_step = sections.wrap("update", GRPOTrainer.training_step)  # less the sampling inside it
    with tempfile.TemporaryDirectory() as output_dir:
        config = GRPOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=args.prompts_per_step * args.generations,
            gradient_accumulation_steps=1,
            num_generations=args.generations,
            max_completion_length=args.max_completion_length,
            max_steps=args.steps,
            learning_rate=LEARNING_RATE,
            beta=0.0,
            loss_type="grpo",
            scale_rewards="group",
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            lr_scheduler_type="constant",
            warmup_steps=0,
            max_grad_norm=1.0,
            weight_decay=0.0,
            use_vllm=False,
            bf16=False,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=1,
            use_cpu=args.device == "cpu",
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=gold_reward, args=config, train_dataset=dataset, processing_class=tokenizer
        )
        trainer.train()
    lengths = [log["completions/mean_length"] for log in trainer.state.log_history if "completions/mean_length" in log]
    if len(lengths) != args.steps:
        raise RuntimeError(f"TRL logged {len(lengths)} mean lengths for {args.steps} steps")
    return round(sum(lengths) * args.prompts_per_step * args.generations)


# --- one measured run, and the round robin -----------------------------------------------------------
def measure(trainer: str, args) -> dict:
    """Run one trainer in this process; return its throughput, sections and memory."""
    torch.set_num_threads(args.threads)
    model, tokenizer, world, prompts = load_model_and_prompts(args)
    batches = prepare_bare_batches(model, tokenizer, prompts, args) if trainer == "bare loop" else None
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    sections = Sections()
    torch.optim.AdamW.step = sections.wrap("update", torch.optim.AdamW.step)  # every trainer's optimizer step
    start, start_cpu = time.perf_counter(), time.process_time()
    if trainer == "train_policy_gradient":
        tokens = run_train_policy_gradient(model, tokenizer, world, prompts, args, sections)
    elif trainer == "bare loop":
        tokens = run_bare_loop(model, tokenizer, world, batches, args, sections)
    else:
        tokens = run_trl(model, tokenizer, world, prompts, args, sections)
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    sections.seconds["other"] = cpu_seconds - sum(sections.seconds.values())
    completions = args.steps * args.prompts_per_step * args.generations
    result = {
        "trainer": trainer,
        "threads": args.threads,
        "completions": completions,
        "tokens": tokens,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "completions_per_s": completions / seconds,
        "completions_per_cpu_s": completions / cpu_seconds,
        "tokens_per_s": tokens / seconds,
        "tokens_per_cpu_s": tokens / cpu_seconds,
        "sections": {k: v / cpu_seconds for k, v in sections.seconds.items()},
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
        "--threads",
        str(args.threads),
        "--steps",
        str(args.steps),
        "--prompts-per-step",
        str(args.prompts_per_step),
        "--generations",
        str(args.generations),
        "--max-completion-length",
        str(args.max_completion_length),
        "--device",
        args.device,
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    """Throughput and memory; the ratio column compares completions per CPU-second at the same number of threads."""
    ours = {r["threads"]: r["completions_per_cpu_s"] for r in results if r["trainer"] == "train_policy_gradient"}
    memory = "peak CUDA MiB" if "peak_cuda_mib" in results[0] else "peak RSS MiB (after loading)"
    lines = [
        f"| trainer | threads | completions per CPU-second | tokens per CPU-second | completions/s (wall) | "
        f"tokens/s (wall) | train_policy_gradient ÷ this | {memory} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        peak = (
            f"{r['peak_cuda_mib']:.0f}"
            if "peak_cuda_mib" in r
            else f"{r['peak_rss_mib']:.0f} ({r['loaded_rss_mib']:.0f})"
        )
        lines.append(
            f"| {r['trainer']} | {r['threads']} | {r['completions_per_cpu_s']:.0f} | "
            f"{r['tokens_per_cpu_s']:.0f} | {r['completions_per_s']:.0f} | {r['tokens_per_s']:.0f} | "
            f"{ours[r['threads']] / r['completions_per_cpu_s']:.2f} | {peak} |"
        )
    return "\n".join(lines)


def sections_table(results: list[dict]) -> str:
    """Where each run's CPU time went, in percent."""
    lines = ["| trainer | threads | " + " | ".join(SECTIONS) + " |", "|---|---|" + "---|" * len(SECTIONS)]
    for r in results:
        shares = " | ".join(f"{100 * r['sections'][s]:.0f}%" if r["sections"][s] >= 0.005 else "–" for s in SECTIONS)
        lines.append(f"| {r['trainer']} | {r['threads']} | {shares} |")
    return "\n".join(lines)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("transformers", "trl", "accelerate"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return ", ".join(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU threads, for every trainer")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps; each new prompt is used once")
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt (num_generations)")
    parser.add_argument("--max-completion-length", type=int, default=24)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5, help="keep each trainer's fastest of this many runs")
    parser.add_argument("--only", choices=TRAINERS, help=argparse.SUPPRESS)  # one run, JSON out
    args = parser.parse_args()
    if args.only:
        args.threads = args.threads[0]
        print(json.dumps(measure(args.only, args)))
        return
    trainers = TRAINERS if find_spec("trl") else TRAINERS[:2]
    print(
        f"{cpu_name()}, torch {torch.__version__}, {versions()}, device {args.device}, "
        f"{args.steps} steps of {args.prompts_per_step} prompts × {args.generations} generations, "
        f"max_completion_length {args.max_completion_length}, best of {args.repeats}"
    )
    best = []
    for threads in args.threads:
        runs = {trainer: [] for trainer in trainers}
        for _ in range(args.repeats):  # round robin, so a busy spell on the machine hits every trainer alike
            for trainer in trainers:
                runs[trainer].append(
                    run_in_subprocess(trainer, argparse.Namespace(**{**vars(args), "threads": threads}))
                )
        results = [max(runs[t], key=lambda r: r["completions_per_cpu_s"]) for t in trainers]
        best += results
        print(table(results), flush=True)
        print(sections_table(results), flush=True)
        print(json.dumps(runs), file=sys.stderr, flush=True)  # every run, for the record
    if len(args.threads) > 1:
        print(table(best))
        print(sections_table(best))


if __name__ == "__main__":
    main()
