"""Seeded random generators of our own, and their state as JSON (so that a resumed run draws the same)."""

import torch

# torch's generators take 64 bits, and the data sampler seeds with seed + epoch: every seed stays below 2**63.
MAX_SEED = 2**63 - 1


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator of our own (the global RNG is left alone); JSON Schema integers may arrive as 3.0."""
    return torch.Generator().manual_seed(int(seed))


def generator_state(generator: torch.Generator) -> dict:
    """A JSON-friendly copy of a random generator's state (for NNCF's compression state)."""
    return {"generator_state": generator.get_state().tolist()}


def restore_generator(generator: torch.Generator, state: dict) -> None:
    if "generator_state" in state:
        generator.set_state(torch.tensor(state["generator_state"], dtype=torch.uint8))
