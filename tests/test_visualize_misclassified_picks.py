"""Which validation images the contact sheets show: mistakes most-confident first, and per class the most
confident correct one (pure function, no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetl.visualize import pick_examples

LABELS = ["ant", "bee", "wasp"]


def test_mistakes_by_confidence_and_best_correct_per_class():
    rows = [(Path(f"{i}.png"), lab) for i, lab in enumerate(["ant", "ant", "bee", "bee", "wasp", "ant", "moth"])]
    probs = np.array([
        [0.9, 0.05, 0.05],  # 0 ant right (0.9)
        [0.2, 0.7, 0.1],    # 1 ant -> bee wrong (0.7)
        [0.1, 0.6, 0.3],    # 2 bee right (0.6)
        [0.05, 0.1, 0.85],  # 3 bee -> wasp wrong (0.85)
        [0.3, 0.3, 0.4],    # 4 wasp right (0.4)
        [0.95, 0.03, 0.02], # 5 ant right (0.95)
        [0.1, 0.8, 0.1],    # 6 a label the run does not know: counted wrong
    ])
    wrong, correct = pick_examples(rows, probs, LABELS)
    assert wrong == [3, 6, 1]
    assert correct == [5, 2, 4]


def test_empty_split():
    assert pick_examples([], np.zeros((0, 3)), LABELS) == ([], [])


def test_class_with_no_correct_image_is_left_out():
    rows = [(Path("a.png"), "ant"), (Path("b.png"), "bee")]
    probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.7, 0.1]])
    assert pick_examples(rows, probs, LABELS) == ([0], [1])
