"""How fast the exchange simulator's client can offer load: its own HTTP/1.1 client against
Tornado's, and the whole exchange, each against a minimal server in a child process."""

from __future__ import annotations

from sim.bench import main as sim_bench_main


def main() -> None:
    sim_bench_main([])


if __name__ == "__main__":
    main()
