"""Plausible wrong answers to the TRL notebook's function exercise, each with the case its check must name."""

from tests.exercise_tools import WrongVersion

RECIPE = "the notebook's recipe: 16 prompts × 8 answers, one update a rollout, 30 rollouts"
HALVES = "8 prompts × 4 answers in 2 updates a rollout, 50 rollouts"

WRONG = {
    "trl.1": [
        WrongVersion(  # this project's count: TRL's batch taken for prompts, as batch_size is here
            "TRL's batch in prompts",
            lambda c: (c.batch_size // c.num_mini_batches, c.num_mini_batches, c.num_steps * c.num_mini_batches),
            RECIPE,
        ),
        WrongVersion(  # forgetting the cut: every update given the whole rollout
            "the whole rollout in every update",
            lambda c: (c.batch_size * c.num_generations, c.num_mini_batches, c.num_steps * c.num_mini_batches),
            HALVES,
        ),
        WrongVersion(  # a wrong normaliser: max_steps counted in rollouts, as num_steps is here
            "max_steps in rollouts",
            lambda c: (c.batch_size * c.num_generations // c.num_mini_batches, c.num_mini_batches, c.num_steps),
            HALVES,
        ),
        WrongVersion(  # the prompts cut first, then answered: wrong when num_mini_batches does not divide batch_size
            "the prompts divided among the updates before the answers",
            lambda c: (
                c.batch_size // c.num_mini_batches * c.num_generations,
                c.num_mini_batches,
                c.num_steps * c.num_mini_batches,
            ),
            "3 prompts × 4 answers in 2 updates: the cut falls inside a prompt's group",
        ),
    ],
}
