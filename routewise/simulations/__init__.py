"""Synthetic environments, offline replay of logged traces and regret reports.

Built under the "Simulations" issue; the supervised-to-bandit benchmark streams live in
``benchmarks/bakeoff.py`` for now.
"""

__all__: list[str] = []
