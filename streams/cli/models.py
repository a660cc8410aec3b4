"""`nudgeflow models train | evaluate`: predicted scores and product recommendations from ClickHouse's history,
and the scores' back-test."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from schemas.scores import DEFAULT_HORIZON_DAYS
from schemas.settings import Settings
from streams.cli.base import Commands, command_group, subcommand


def moment(text: str) -> datetime:
    """An ISO 8601 moment; one without a zone is UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 moment: {text!r}") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def command_models_train(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow models train`: fit the models on ClickHouse's history and compute the products bought together
    or after one another, store both there and, unless --no-publish, publish them (the recommendations with a
    tombstone for each product that lost its own)."""
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.rows import RowOptions
    from sinks.clickhouse.schema import apply_migrations
    from sinks.predictions.publish import (
        dropped_products,
        not_erased,
        publish_recommendations,
        publish_scores,
        store_recommendations,
        store_scores,
    )
    from sinks.predictions.recommendations import compute_recommendations, recommendations_version
    from sinks.predictions.training import train
    from streams.broker.topics import ensure_topics

    at = arguments.at or datetime.now(UTC)
    publish = not arguments.no_publish
    published = recommendations_published = 0
    client = connect(settings)
    try:
        apply_migrations(client)
        try:
            trained = train(client, at, arguments.horizon_days)
        except ValueError as error:
            print(f"models train: {error}", file=sys.stderr)
            return 1
        scores = not_erased(client, trained.scores, RowOptions.of(settings))
        store_scores(client, scores)
        version = recommendations_version(at)
        recommendations = compute_recommendations(client, at)
        # Read before this run's rows are stored; unpublished, the topic keeps what it has, so nothing is dropped.
        dropped = dropped_products(client, recommendations) if publish else []
        store_recommendations(client, recommendations, [], version, at)
        if publish:
            ensure_topics(settings, [settings.scores_topic, settings.recommendations_topic])
            published = publish_scores(settings, scores)
            recommendations_published = publish_recommendations(settings, recommendations, dropped)
            # Recorded once the broker holds the tombstones: one that failed is sent again by the next run.
            store_recommendations(client, [], dropped, version, at)
    finally:
        client.close()
    print(
        f"models train: {trained.model_version}: scored {len(scores)} customers, stored in ClickHouse, "
        f"published {published} to {settings.scores_topic}",
        flush=True,
    )
    print(
        f"models train: {version}: recommendations for {len(recommendations)} products, {len(dropped)} dropped, "
        f"stored in ClickHouse, published {recommendations_published} to {settings.recommendations_topic}",
        flush=True,
    )
    return 0


def command_models_evaluate(settings: Settings, arguments: argparse.Namespace) -> int:
    """`nudgeflow models evaluate`: back-test the models from a cut-off and print how they did."""
    from sinks.clickhouse.client import connect
    from sinks.clickhouse.schema import apply_migrations
    from sinks.predictions.evaluate import evaluate, store_evaluation, table

    client = connect(settings)
    try:
        apply_migrations(client)
        try:
            evaluation = evaluate(client, arguments.cutoff, arguments.horizon_days)
        except ValueError as error:
            print(f"models evaluate: {error}", file=sys.stderr)
            return 1
        stored = store_evaluation(client, evaluation, datetime.now(UTC))
    finally:
        client.close()
    print(table(evaluation), flush=True)
    print(f"models evaluate: {stored} figures stored in ClickHouse (model_evaluations)", flush=True)
    return 0


def register(commands: Commands) -> None:
    """Add `nudgeflow models` and its subcommands to the command line."""
    models = command_group(commands, "models", "predicted churn, lifetime value and propensity from ClickHouse")
    about = (
        "fit on the history in ClickHouse, store the scores and recommendations there and publish them on the "
        "scores and recommendations topics"
    )
    train = subcommand(models, "train", about, command_models_train)
    train.add_argument("--at", type=moment, default=None, help="score as of this moment (default: now)")
    train.add_argument(
        "--no-publish", action="store_true", help="store the scores and recommendations in ClickHouse only"
    )
    about = "back-test: train before a cut-off, score the window after it, beside naive baselines"
    evaluate = subcommand(models, "evaluate", about, command_models_evaluate)
    evaluate.add_argument("--cutoff", type=moment, required=True, help="train on the history before this moment")
    for parser in (train, evaluate):
        parser.add_argument(
            "--horizon-days",
            type=int,
            choices=range(7, 366),
            metavar="DAYS",
            default=DEFAULT_HORIZON_DAYS,
            help=f"days the scores cover (7-365, default {DEFAULT_HORIZON_DAYS})",
        )
