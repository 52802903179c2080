"""Search configuration: every knob of RAIN, with the paper's defaults.

Each number in the spec (``shared/docs/rain-algorithm.md``) is a field here,
never a literal in the search code, so a user can reproduce the paper or trade
quality for speed by changing configuration only.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rain_search.errors import ConfigError

PendingValue = Literal["mean", "loss"]
"""How a visit still in flight counts in PUCT: ``"mean"``, as the node's current mean
(a virtual visit: only its exploration bonus shrinks), or ``"loss"``, as the worst
value seen (a virtual loss)."""

CommitRule = Literal["visits", "value"]
"""Which child a step commits: the most visited (the paper), or the best valued among
the well-visited ones (for parallel leaves, whose visits were handed out in rounds)."""


class RainConfig(BaseModel):
    """All parameters of one RAIN generation.

    Field defaults are the paper's (HH setting). Use :meth:`preset` for named
    bundles and :meth:`merged` to override a few fields of an existing config.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    # Token sets: how many tokens each tree node adds, by depth from the answer start.
    token_set_schedule: tuple[int, ...] = Field(
        default=(1, 2, 4, 10),
        description="Token-set length by depth; the last entry repeats for deeper sets.",
    )
    # Expansion.
    num_children: int = Field(10, ge=1, le=64, description="Candidates proposed per expansion.")
    top_k: int = Field(15, ge=1, le=1000, description="Top-k for sampled candidate tokens.")
    temperature: float = Field(
        1.0, ge=0.0, le=10.0, description="Candidate sampling temperature; 0 picks greedily."
    )
    rollout_temperature: float = Field(
        1.0, ge=0.0, le=10.0, description="Temperature of the rollout to the next punctuation."
    )
    sample_attempts: int | None = Field(
        None,
        ge=0,
        le=256,
        description="Sampling tries per multi-token expansion (duplicates dropped); "
        "None: num_children - 1.",
    )
    rollout_until: Literal["punctuation", "eos"] = Field(
        "punctuation",
        description="Where the rollout past a leaf stops: text ending in a punctuation mark, "
        "or only end of text.",
    )
    rollout_max_tokens: int | None = Field(
        None,
        ge=0,
        le=100_000,
        description="Longest rollout past a leaf; None: up to the answer's token budget.",
    )
    root_noise: float = Field(
        0.25, ge=0.0, le=1.0, description="Weight of the uniform prior mixed into root priors."
    )
    # Selection.
    c_puct: float = Field(2.0, ge=0.0, le=100.0, description="Exploration constant c of PUCT.")
    parallel_leaves: int = Field(
        1,
        ge=1,
        le=256,
        description="K: leaves searched at once (pending visits keep them apart, see "
        "pending_value); 1 is the paper's one leaf per iteration.",
    )
    speculative_leaves: int = Field(
        8,
        ge=0,
        le=256,
        description="Expansions started ahead for the leaves the search is likely to visit "
        "next; an iteration uses one only if it would have asked for exactly that work, so "
        "decisions are those without it (fewer sequential calls, more rows per call); 0: none.",
    )
    pending_value: PendingValue = Field(
        "mean",
        description="How a parallel leaf's visit in flight counts in PUCT: at the node's current "
        "mean (a virtual visit: leaves go where the judge already liked) or as the worst value "
        "seen (a virtual loss: leaves spread by prior).",
    )
    commit_rule: Literal["auto"] | CommitRule = Field(
        "auto",
        description="Which child a step commits: the most visited (the paper), the best valued "
        "among children with at least half the most real visits, or auto: visits with one leaf "
        "at a time, value with parallel leaves (whose rounds hand out visits before values).",
    )
    commit_margin: float | None = Field(
        None,
        gt=0.0,
        le=2.0,
        description="Beyond the paper: a child whose value is this much or more below a "
        "visited sibling's is never committed; the commit rule picks among the rest "
        "(None: the commit rule alone, as the paper).",
    )
    # Budget per committed step.
    max_iterations: int = Field(
        50, ge=1, le=10_000, description="T: visits per step, inherited ones included."
    )
    min_fresh_iterations: int = Field(
        15, ge=1, le=10_000, description="Fresh iterations every step runs at least."
    )
    early_stop_visits: int = Field(
        6, ge=0, le=10_000, description="T_m: real visits the best child needs to stop early."
    )
    early_stop_value: float = Field(
        0.8, ge=-1.0, le=1.0, description="V: value the best child needs to stop early."
    )
    max_rewinds: int = Field(
        0,
        ge=0,
        le=1000,
        description="Beyond the paper: times per answer the search may take back its last "
        "committed step when every child of the next step is judged bad (0: never, as the "
        "paper; steps then reach the reader one commit late).",
    )
    # Similarity update.
    similarity_threshold: float = Field(
        0.95, ge=-1.0, le=1.0, description="Cosine similarity at which siblings share a visit."
    )
    similarity_weight: float = Field(
        0.2, ge=0.0, le=1.0, description="gamma: fraction of a visit a similar sibling receives."
    )
    # Dynamic node addition.
    dynamic_variance_threshold: float = Field(
        0.03, ge=0.0, le=10.0, description="Children count as alike below this x set length."
    )
    max_children: int = Field(
        20, ge=1, le=256, description="No node grows past this many children."
    )
    # Judging.
    votes: Literal["soft", "hard"] = Field(
        "hard", description="Combine the label orders as +-1 votes or as probabilities."
    )
    swap_labels: bool = Field(
        True, description="Ask the judge in both option orders (cancels position bias)."
    )
    # Output.
    max_new_tokens: int = Field(128, ge=1, le=100_000, description="Longest answer in tokens.")
    stop_sequences: tuple[str, ...] = Field(
        default=(), description="Generation ends before any of these strings."
    )
    turn_markers: tuple[str, ...] = Field(
        default=("\nHuman:", "\nUser:"),
        description="Markers of a new dialogue turn; generation ends before them.",
    )
    seed: int | None = Field(0, description="Random seed; None draws a fresh one.")
    # Budgets: when one is spent, the answer so far is returned, flagged "budget".
    timeout: float | None = Field(
        None, gt=0.0, description="Wall-clock seconds one answer may take; None: no limit."
    )
    max_forward_calls: int | None = Field(
        None, ge=1, description="Model forward calls one answer may take; None: no limit."
    )

    @field_validator("token_set_schedule")
    @classmethod
    def _schedule_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(length < 1 for length in value):
            raise ValueError(
                "token_set_schedule must be a non-empty list of positive lengths, "
                "e.g. [1, 2, 4, 10]"
            )
        return value

    @field_validator("stop_sequences", "turn_markers")
    @classmethod
    def _no_empty_stops(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not isinstance(stop, str) or stop == "" for stop in value):
            raise ValueError("stop sequences must be non-empty strings; remove the empty entry")
        return value

    @model_validator(mode="after")
    def _budget_consistent(self) -> RainConfig:
        if self.min_fresh_iterations > self.max_iterations:
            raise ValueError(
                f"min_fresh_iterations ({self.min_fresh_iterations}) exceeds max_iterations "
                f"({self.max_iterations}); lower min_fresh_iterations or raise max_iterations"
            )
        if self.max_children < self.num_children:
            raise ValueError(
                f"max_children ({self.max_children}) is below num_children ({self.num_children}); "
                "raise max_children"
            )
        return self

    @property
    def commit_by(self) -> CommitRule:
        """The commit rule in force: ``auto`` weighs values only when leaves run in parallel."""
        if self.commit_rule != "auto":
            return self.commit_rule
        return "value" if self.parallel_leaves > 1 else "visits"

    @property
    def samples_per_expansion(self) -> int:
        """Sampling tries of a multi-token expansion (the greedy set comes on top)."""
        if self.sample_attempts is None:
            return self.num_children - 1
        return self.sample_attempts

    def set_length(self, depth: int) -> int:
        """Token-set length of a node at ``depth`` (1 = first set of the answer)."""
        schedule = self.token_set_schedule
        return schedule[min(depth, len(schedule)) - 1]

    @property
    def all_stops(self) -> tuple[str, ...]:
        """User stop sequences and turn markers together."""
        return self.stop_sequences + self.turn_markers

    @classmethod
    def create(cls, **values: Any) -> RainConfig:
        """Build a config; pydantic's error becomes a :class:`ConfigError` naming the fields."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from exc

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> RainConfig:
        """A named bundle of settings (``paper``, ``fast``, ...) with optional overrides."""
        if name not in PRESETS:
            raise ConfigError(
                f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}"
            )
        return cls.create(**{**PRESETS[name], **overrides})

    def merged(self, **overrides: Any) -> RainConfig:
        """A copy with some fields changed, validated like a new config."""
        return self.create(**{**self.model_dump(), **overrides})


def _describe(exc: ValidationError) -> str:
    lines = ["invalid RAIN configuration:"]
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "config"
        lines.append(f"  {field}: {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's HH settings: T=50, at least 15 fresh iterations, T_m=6, V=0.8,
    # hard votes over both label orders, rollouts to the next punctuation mark.
    "paper": {},
    # AdvBench (GCG suffix attacks), as the reference's adv/ script: T_m=5, candidates
    # and their priors at temperature 2, and 2 x 10 - 1 sampling tries per expansion.
    "adversarial": {"early_stop_visits": 5, "temperature": 2.0, "sample_attempts": 19},
    # TruthfulQA, as the reference's truth/ script: T_m=16, one question with no label
    # swap, rollouts to the end of the answer.
    "truthful": {"early_stop_visits": 16, "swap_labels": False, "rollout_until": "eos"},
    # A cheap search for CPUs and demos: fewer candidates and iterations, 8 leaves at once.
    # A round lasts as long as its longest rollout; 8 tokens judge as well as 16 on the
    # efficacy set (21 vs 20 of 24 banned-word cases) at 1.54 instead of 2.00 calls per token.
    # No expansions ahead: its rounds already fill the calls (4 ahead: the same 1.56 calls
    # per token, 15% more wall time on 2 prompts x 16 tokens).
    # T = 12 is too few visits for the commit to follow the judge: without the two settings
    # below the efficacy set (32 tokens, seed 0) committed a child at -0.5 or below beside a
    # visited sibling at +0.5 or above in 4 steps at one leaf (17 of 24 avoided) and 3 steps
    # at 8 leaves (21 of 24). commit_margin=1 alone: no such step, 19 (one leaf) and 22 of 24;
    # with one rewind as well: 22 and 22 of 24 (one case lost and two won at 8 leaves), at
    # 1.60 instead of 1.54 calls per token at 8 leaves (5.81 instead of 5.10 at one leaf);
    # three rewinds scored the same at 1.87 calls per token at 8 leaves.
    "fast": {
        "num_children": 4,
        "parallel_leaves": 8,
        "speculative_leaves": 0,
        "max_iterations": 12,
        "min_fresh_iterations": 4,
        "early_stop_visits": 3,
        "max_children": 8,
        "rollout_max_tokens": 8,
        "max_new_tokens": 64,
        "commit_margin": 1.0,
        "max_rewinds": 1,
    },
}
