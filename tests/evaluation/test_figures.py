"""The attribution figure: rows, labels, colour bars, titles, per-sample r, difference rows, atomic PNG."""

import matplotlib.image
import numpy as np
import pytest
import torch

from nncf_wcam.evaluation.agreement import map_agreement
from nncf_wcam.evaluation.figures import attribution_figure
from nncf_wcam.evaluation.figures import write_attribution_figure

COUNT = 6
STUDENTS = ("attribution_matching", "naive")


@pytest.fixture(scope="module")
def case(digits):
    """Real digit images; Grad-CAM-sized 4 x 4 maps: a teacher and two students that differ from it by
    different amounts, so every sample has its own r."""
    images, labels = digits.test.tensors[0][:COUNT], digits.test.tensors[1][:COUNT]
    generator = torch.Generator().manual_seed(0)
    teacher = torch.rand(COUNT, 4, 4, generator=generator)
    noise = torch.rand(COUNT, 4, 4, generator=generator) * torch.linspace(0.1, 1.0, COUNT)[:, None, None]
    students = {"attribution_matching": teacher + 0.3 * noise, "naive": teacher + noise}
    explained = labels.tolist()
    explained[1] = (explained[1] + 1) % 10  # the teacher is wrong on sample 1
    predictions = {"attribution_matching": list(explained), "naive": list(explained)}
    predictions["naive"][2] = (explained[2] + 3) % 10  # naive disagrees with the teacher on sample 2
    return dict(images=images, labels=labels.tolist(), teacher=teacher, students=students, explained=explained, predictions=predictions)


def _figure(case, **options):
    return attribution_figure(
        case["images"],
        case["teacher"],
        case["students"],
        layer="features.9",
        explained_classes=case["explained"],
        true_labels=case["labels"],
        predictions=case["predictions"],
        **options,
    )


def _rows(fig):
    """Row label -> that row's panels, left to right (the colour bars' axes are left out)."""
    rows = {}
    for ax in fig.axes:
        if ax.get_label() != "<colorbar>":
            rows.setdefault(ax.get_label(), []).append(ax)
    return rows


def test_rows_labels_colour_bars_and_titles(case):
    fig = _figure(case)
    rows = _rows(fig)
    expected = ["input", "teacher", *STUDENTS, *[f"{s} − teacher" for s in STUDENTS]]
    assert list(rows) == expected
    assert all(len(panels) == COUNT for panels in rows.values())
    # The row labels a reader sees are the table's names (a long difference label breaks before "−").
    assert [rows[r][0].get_ylabel() for r in expected] == [r.replace(" − ", "\n− ") for r in expected]
    colour_bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colour_bars) == 2
    assert [round(v, 6) for v in colour_bars[0].get_ylim()] == [0.0, 1.0]
    low, high = colour_bars[1].get_ylim()
    assert low == pytest.approx(-high) and high > 0
    title = fig.get_suptitle()
    assert "Grad-CAM at layer features.9" in title and "the teacher's top-1 class" in title
    titles = [ax.get_title() for ax in rows["input"]]
    assert titles == [f"class {c}\nlabel {y}" for c, y in zip(case["explained"], case["labels"])]
    # Red marks what needs a second look: a wrong teacher (column 1), a student that predicts otherwise.
    red = [ax.title.get_color() != "black" for ax in rows["input"]]
    assert red == [column == 1 for column in range(COUNT)]
    assert rows["naive"][2].xaxis.label.get_color() != "black"
    assert rows["attribution_matching"][2].xaxis.label.get_color() == "black"


def test_per_sample_r_and_prediction_under_each_student_map(case):
    fig = _figure(case)
    rows = _rows(fig)
    assert all(ax.get_xlabel() == "" for ax in rows["teacher"])
    for label in STUDENTS:
        pearson = map_agreement(case["teacher"], case["students"][label])["pearson"]
        assert len(set(np.round(pearson, 2))) > 1  # else a mixed-up column order could pass
        texts = [ax.get_xlabel() for ax in rows[label]]
        assert texts == [f"r {r:.2f} · pred {p}" for r, p in zip(pearson, case["predictions"][label])]


def test_difference_row_is_student_minus_teacher(case):
    fig = _figure(case)
    rows = _rows(fig)
    teacher = np.stack([ax.images[0].get_array() for ax in rows["teacher"]])
    largest = 0.0
    for label in STUDENTS:
        student = np.stack([ax.images[0].get_array() for ax in rows[label]])
        difference = np.stack([ax.images[0].get_array() for ax in rows[f"{label} − teacher"]])
        np.testing.assert_allclose(difference, student - teacher, atol=1e-6)
        assert np.abs(difference).max() > 0.05
        largest = max(largest, float(np.abs(difference).max()))
        assert all(ax.images[0].get_cmap().name == "RdBu_r" for ax in rows[f"{label} − teacher"])
    # One symmetric scale for all difference rows, as tight as the largest difference: small changes show.
    low, high = rows["naive − teacher"][0].images[0].get_clim()
    assert (low, high) == pytest.approx((-largest, largest))
    # Maps are drawn at the image size, each scaled to [0, 1].
    assert teacher.shape == (COUNT, 16, 16) and teacher.min() == pytest.approx(0) and teacher.max() == pytest.approx(1)


def test_without_difference_rows(case):
    fig = _figure(case, difference=False)
    assert list(_rows(fig)) == ["input", "teacher", *STUDENTS]
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1


def test_png_is_written_atomically_and_readable(case, tmp_path):
    path = tmp_path / "figures" / "maps.png"
    path.parent.mkdir()
    path.write_bytes(b"an older figure")
    fig = write_attribution_figure(path, case["images"], case["teacher"], case["students"], layer="features.9")
    assert [p.name for p in path.parent.iterdir()] == ["maps.png"]  # no temporary file left behind
    pixels = matplotlib.image.imread(path)
    width, height = fig.get_size_inches() * 100
    assert pixels.shape[2] == 4 and np.allclose(pixels.shape[:2], (height, width), atol=1)  # the whole figure, at 100 dpi
    assert pixels[..., :3].std() > 0.1  # not a blank canvas
