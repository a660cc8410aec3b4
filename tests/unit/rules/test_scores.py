"""Scores joined to a person: the latest kept, a tombstone clears them, the facts, segments entered."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from schemas.scores import Score
from streams.rules.engine import absorb_score, advance_time, apply_event
from streams.rules.facts import profile_facts
from streams.rules.person import PersonState, SourcePosition
from tests.unit.factories import T0, at, days, identify, rules_from

RULES = rules_from(
    "segments:\n"
    "  - name: valuable_at_risk\n"
    "    all:\n"
    "      - {fact: predicted_clv, op: '>=', value: 200}\n"
    "      - {fact: churn_risk, op: '>=', value: 0.6}\n"
    "  - name: due\n"
    "    all:\n"
    "      - {fact: expected_next_order_days, op: '<=', value: 2}\n"
    "triggers:\n"
    "  - {name: save, entry: {segment: valuable_at_risk}, channel: email, template_id: save}\n"
    "policy: {caps: {}, quiet_hours: {}}\n"
)


def score(minutes: float = 0, clv: float = 300.0, churn: float = 0.7, version: str = "v1", **more: object) -> Score:
    return Score.model_validate(
        {
            "personId": "p1", "modelVersion": version, "scoredAt": at(minutes), "horizonDays": 90,
            "pAlive": round(1 - churn, 6), "churnRisk": churn, "expectedOrders": 1.5, "predictedClv": clv,
            "purchasePropensity": 0.4, **more,
        }
    )  # fmt: skip


def position(offset: int) -> SourcePosition:
    return SourcePosition("scores", 0, offset)


def known() -> PersonState:
    """p1 with an email address and consent, known before the scores arrive."""
    event = identify(0, "p1", email="p1@example.com")
    return apply_event(PersonState.new("p1"), event, SourcePosition("events", 0, 0), RULES).state


def test_a_score_sets_the_facts_and_enters_the_segment_whose_rule_fires() -> None:
    step = absorb_score(known(), score(), at(10), position(1), RULES)
    facts = profile_facts(step.state.profile, at(10), RULES.profile, step.state.current_scores)
    assert (facts["predicted_clv"], facts["churn_risk"], facts["purchase_propensity"]) == (300.0, 0.7, 0.4)
    assert facts["scores_age_days"] == round(10 / days(1), 6)
    assert [(c.segment, c.change) for c in step.segment_changes] == [("valuable_at_risk", "enter")]
    assert [t.rule for t in step.triggers] == ["save"]


def test_without_scores_the_facts_are_unset_and_no_condition_holds() -> None:
    facts = profile_facts(known().profile, at(0), RULES.profile)
    assert all(facts[name] is None for name in ("churn_risk", "predicted_clv", "expected_next_order_days"))
    assert absorb_score(known(), None, at(0), position(1), RULES).segment_changes == []


def test_an_older_score_never_replaces_a_newer_one_and_a_newer_does() -> None:
    newer = absorb_score(known(), score(minutes=60, clv=100.0), at(70), position(1), RULES).state
    older = absorb_score(newer, score(minutes=0, clv=900.0), at(71), position(2), RULES)
    assert older.state.current_scores == newer.current_scores
    assert older.segment_changes == []
    latest = absorb_score(older.state, score(minutes=120, clv=900.0, version="v2"), at(130), position(3), RULES)
    assert latest.state.current_scores is not None and latest.state.current_scores.predicted_clv == 900.0


def test_a_tombstone_clears_the_scores_and_leaves_the_segment() -> None:
    scored = absorb_score(known(), score(), at(10), position(1), RULES).state
    cleared = absorb_score(scored, None, at(20), position(2), RULES)
    assert cleared.state.current_scores is None
    assert [(c.segment, c.change) for c in cleared.segment_changes] == [("valuable_at_risk", "exit")]
    assert profile_facts(cleared.state.profile, at(20), RULES.profile)["churn_risk"] is None


def test_a_state_without_scores_is_stored_as_before_and_with_them_reads_back() -> None:
    assert b"scores" not in known().to_json()  # nor the field's name: the bytes are those of before
    scored = absorb_score(known(), score(), at(10), position(1), RULES).state
    assert PersonState.from_json(scored.to_json()) == scored
    cleared = absorb_score(scored, None, at(20), position(2), RULES).state
    assert b'"scores"' not in cleared.to_json()


def test_expected_next_order_days_counts_down_and_the_due_segment_is_entered_on_time() -> None:
    due = T0 + timedelta(days=10)
    step = absorb_score(known(), score(expectedNextOrderAt=due.isoformat()), at(0), position(1), RULES)
    state = step.state
    assert profile_facts(state.profile, at(0), RULES.profile, state.current_scores)["expected_next_order_days"] == 10
    assert (
        profile_facts(state.profile, at(days(12)), RULES.profile, state.current_scores)["expected_next_order_days"]
        == -2
    )
    assert "due" not in state.segments
    # No event comes (and the person has none for midnight checks): the check falls due two days before.
    unseen = absorb_score(PersonState.new("p1"), score(expectedNextOrderAt=due.isoformat()), at(0), position(1), RULES)
    crossing = due - timedelta(days=2) + timedelta(microseconds=1)
    assert unseen.state.segment_check_at == crossing
    entered = advance_time(unseen.state, due - timedelta(days=1), SourcePosition("checks", 0, 1), RULES)
    assert [(c.segment, c.change, c.at) for c in entered.segment_changes] == [("due", "enter", crossing)]


scores = st.builds(
    lambda minutes, clv, churn, version: score(minutes, clv, churn, version),
    st.integers(0, 1000),
    st.floats(0, 1000),
    st.sampled_from([0.1, 0.5, 0.9]),
    st.sampled_from(["v1", "v2"]),
)


@given(st.lists(scores, max_size=6))
def test_the_same_scores_applied_twice_give_the_same_state(records: list[Score]) -> None:
    once = known()
    for offset, record in enumerate(records):
        once = absorb_score(once, record, at(2000), position(offset), RULES).state
    twice = once
    for offset, record in enumerate(records):  # redelivered: the same offsets
        twice = absorb_score(twice, record, at(2000), position(offset), RULES).state
    assert twice == once
    again = once
    for offset, record in enumerate(records, start=len(records)):  # published again: later offsets
        again = absorb_score(again, record, at(2000), position(offset), RULES).state
    assert again.current_scores == once.current_scores and again.segments == once.segments


@given(st.lists(scores, min_size=1, max_size=6), st.randoms())
def test_the_latest_score_wins_in_any_order(records: list[Score], random: object) -> None:
    shuffled = list(records)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    state = known()
    for offset, record in enumerate(shuffled):
        state = absorb_score(state, record, at(2000), position(offset), RULES).state
    latest = max(records, key=lambda r: (r.scored_at, r.model_version))
    kept = state.current_scores
    assert kept is not None and (kept.scored_at, kept.model_version) == (latest.scored_at, latest.model_version)
