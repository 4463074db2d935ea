"""``rtbfleet campaigns generate``: a realistic synthetic portfolio (YAML or JSON), printed,
written to a file, or loaded into the config database."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import yaml

from fleet.settings import FleetSettings
from sim.portfolio import generate


def generate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", "-n", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--format", choices=("yaml", "json"), default="yaml")
    parser.add_argument("--out", help="write to this file instead of stdout")
    parser.add_argument("--load", action="store_true", help="load into the config database")


def campaigns_generate(settings: FleetSettings, args: argparse.Namespace) -> int:
    document = generate(args.count, seed=args.seed)
    if args.load:
        return asyncio.run(_load(settings, document))
    text = (
        json.dumps(document, indent=1)
        if args.format == "json"
        else yaml.safe_dump(document, sort_keys=False, width=120)
    )
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


async def _load(settings: FleetSettings, document: dict[str, object]) -> int:
    from fleet.cli import database
    from fleet.portfolio import load_document

    async with database(settings) as dsn:
        result = await load_document(dsn, document)
    print(f"generated and loaded {result.campaigns} campaign(s), {result.creatives} creatives")
    return 0
