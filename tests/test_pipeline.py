import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhf_edu.core import zoo
from rlhf_edu.experiments.cli import main
from rlhf_edu.experiments.pipeline import (
    PipelineReport,
    StageReport,
    load_stage,
    measure_stage,
    pipeline_sizes,
    prepare_out,
    run_multi_round,
    run_pipeline,
    run_three_stage,
)

COMPONENTS = {"correctness": 0.1, "relevance": 0.2, "tone": 0.3, "concision": -0.1, "repetition": 0.0}
MINIATURE = {"sft": 8, "preference": 16, "rl": 32}  # a few steps per stage


def hand_made_report() -> PipelineReport:
    sample = [{"prompt": "add 3 and 5", "completion": "3 plus 5 is 8", "gold": 1.5}]
    history = [
        {"step": 0, "gold_reward": 1.0, "eval/reward": 0.1},
        {"step": 10, "gold_reward": 1.4, "eval/reward": 0.6},
    ]
    return PipelineReport(
        "three-stage",
        "tiny",
        {"sft": 1, "preference": 2, "rl": 3},
        {"beta": 0.05},
        [
            StageReport("base", 0.0, 0.2, 0.05, COMPONENTS, None, None, samples=sample),
            StageReport("sft", 12.0, 1.25, 0.08, COMPONENTS, 16.5, None, samples=sample),
            StageReport("rl", 30.0, 1.5, 0.07, COMPONENTS, 2.0, 2.0, 0.8, sample, {"best_step": 10}, history),
        ],
    )


def test_the_report_card_tabulates_every_stage():
    text = hand_made_report().to_markdown(figure="report.png")
    assert "| base | 0 | 0.200 ± 0.050 |  | — | — | — |" in text
    assert "| sft | 12 | 1.250 ± 0.080 | +1.050 | 16.50 | — | — |" in text
    assert "| rl | 30 | 1.500 ± 0.070 | +0.250 | 2.00 | 2.00 | 0.800 |" in text
    assert "Total time: 42 s." in text and "- rl: best_step = 10" in text
    assert "![the report card's plots](report.png)" in text and "  - rl: 3 plus 5 is 8 [+1.50]" in text


def test_the_report_plots_its_stages_and_the_rl_curve():
    report = hand_made_report()
    assert len([ax for ax in report.plot().axes if ax.get_title()]) == 4
    report.stages[-1].history = []
    assert len([ax for ax in report.plot().axes if ax.get_title()]) == 3


def test_a_report_survives_a_round_trip(tmp_path):
    report = hand_made_report()
    assert PipelineReport.load(report.save(tmp_path / "r.json")) == report


def test_sizes_scale_the_book_to_the_preset_and_bad_sizes_are_refused():
    assert pipeline_sizes("small") == {"sft": 10_000, "preference": 100_000, "rl": 100_000}
    assert pipeline_sizes("tiny", {"rl": 64}) == {"sft": 1_000, "preference": 2_000, "rl": 64}
    with pytest.raises(ValueError, match="sizes\\['sft'\\] must be"):
        run_three_stage(sizes={"sft": 0})
    with pytest.raises(ValueError, match="sizes\\['rl'\\] must be"):
        pipeline_sizes("tiny", {"rl": -5})
    with pytest.raises(ValueError, match="unknown sizes key 'pairs': use one of 'sft', 'preference', 'rl'"):
        pipeline_sizes("tiny", {"pairs": 10})


def test_bad_pipeline_stage_rounds_and_out_are_named(tmp_path):
    with pytest.raises(ValueError, match="unknown pipeline 'two-stage': use one of 'three-stage', 'multi-round'"):
        run_pipeline("two-stage")
    with pytest.raises(ValueError, match="unknown stage 'ppo': use one of 'base', 'sft', 'rl'"):
        hand_made_report().stage("ppo")
    with pytest.raises(ValueError, match="rounds must be"):
        run_multi_round(rounds=0)
    (tmp_path / "old.txt").write_text("results")
    with pytest.raises(ValueError, match="exists and is not empty.*overwrite=True"):
        prepare_out(tmp_path)
    with pytest.raises(ValueError, match="holds old.txt, which no pipeline wrote"):
        prepare_out(tmp_path, overwrite=True)
    assert (tmp_path / "old.txt").exists()
    (tmp_path / "old.txt").unlink()
    (tmp_path / "sft").mkdir()
    (tmp_path / "report.md").write_text("an earlier run")
    assert prepare_out(tmp_path, overwrite=True) == tmp_path and not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="no stage 'rl' saved"):
        load_stage(tmp_path, "rl")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["pipeline", "two-stage", "--out", "x"], "invalid choice: 'two-stage'"),
        (["pipeline", "three-stage", "--out", "x", "--sizes", "sft=many"], "'sft=many' is not name=integer"),
    ],
)
def test_the_command_names_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit):
        main(argv)
    assert message in capsys.readouterr().err


def test_the_command_refuses_a_folder_with_files(capsys, tmp_path):
    (tmp_path / "old.txt").write_text("results")
    assert main(["pipeline", "three-stage", "--out", str(tmp_path)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err and (tmp_path / "old.txt").exists()


def test_a_stage_measured_against_itself_has_no_kl(world):
    policy, tokenizer = zoo.load("sft")
    stage = measure_stage("sft", policy, tokenizer, world, world.prompts(4, split="test"), 1.0, sft=policy)
    assert stage.kl_to_previous is None and stage.kl_to_sft == 0.0 and len(stage.samples) == 4


def test_a_miniature_three_stage_run_writes_its_report_and_models(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "pipeline",
                "three-stage",
                "--out",
                str(out),
                "--rl-algorithm",
                "rloo",
                "--sizes",
                ",".join(f"{k}={v}" for k, v in MINIATURE.items()),
            ]
        )
        == 0
    )
    assert f"wrote {out / 'report.md'}" in capsys.readouterr().out
    report = PipelineReport.load(out / "report.json")
    assert report.names == ["base", "sft", "rm", "rl"] and report.sizes == MINIATURE
    assert report.stage("rm").notes["pairs"] <= MINIATURE["preference"] and report.stage("rl").history
    assert (out / "report.png").stat().st_size > 0 and "| rl |" in (out / "report.md").read_text()
    for name in ("base", "sft", "rl"):
        assert AutoModelForCausalLM.from_pretrained(out / name).config.architectures == ["LlamaForCausalLM"]
    rm = AutoModelForSequenceClassification.from_pretrained(out / "rm")
    assert rm.config.num_labels == 1
    policy, tokenizer = load_stage(out, "rl")
    assert tokenizer.chat_template and json.loads((out / "rl" / "config.json").read_text())["vocab_size"] == len(
        tokenizer
    )


def test_a_miniature_multi_round_run_measures_each_round_and_repeats_from_its_seed(tmp_path):
    report = run_multi_round(rounds=2, sizes=MINIATURE, out=tmp_path, progress=False, num_eval_prompts=16)
    assert report.names == ["base", "sft", "round-1", "round-2"]
    torch.manual_seed(123)  # whatever ran before, the same seed gives the same run
    again = run_multi_round(
        rounds=1, sizes={**MINIATURE, "preference": 8, "rl": 16}, progress=False, num_eval_prompts=16
    )
    assert again.stage("round-1").samples == report.stage("round-1").samples
    assert again.stage("round-1").gold_reward == report.stage("round-1").gold_reward
    assert all(s.kl_to_previous is not None and s.kl_to_sft is not None for s in report.stages[2:])
    assert report.stage("round-2").notes["grpo_steps"] == 1
    for name in ("sft", "round-1", "round-2"):
        assert load_stage(tmp_path, name)[0].config.vocab_size == zoo.load("base")[0].config.vocab_size


def test_runs_over_seeds_round_trip_and_give_the_spread_of_a_stage_gain(tmp_path):
    from dataclasses import replace

    from rlhf_edu.experiments.pipeline import gains_over_seeds, load_reports, save_reports

    reports = []
    for rl_gold in (1.45, 1.5, 1.7):  # sft is 1.25 in every run: gains 0.2, 0.25, 0.45
        report = hand_made_report()
        report.stages[-1] = replace(report.stages[-1], gold_reward=rl_gold)
        reports.append(report)
    loaded = load_reports(save_reports(reports, tmp_path / "seeds.json"))
    assert [r.stage("rl").gold_reward for r in loaded] == [1.45, 1.5, 1.7]
    assert all(s.samples == [] for r in loaded for s in r.stages), "the samples stay out of the multi-seed file"
    gains, mean, stderr = gains_over_seeds(loaded, "rl", "sft")
    assert gains == pytest.approx([0.2, 0.25, 0.45]) and mean == pytest.approx(0.3)
    assert stderr == pytest.approx(torch.tensor([0.2, 0.25, 0.45]).std().item() / 3**0.5)
