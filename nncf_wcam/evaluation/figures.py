"""Attribution-map figures: one layout for the CLI report and the benchmarks.

A figure compares students' attribution maps with a reference's (the teacher's) on a few samples,
one sample per column:

- row "input": the images; each column is titled with the class its maps explain (and the true
  label, red where the reference gets it wrong);
- one row per model, the reference first, labelled as in the report's table: each map min-max
  scaled to [0, 1] (Pearson r ignores scale and offset, so this is what r compares), drawn with the
  input's outline, on one shared colour bar. Under each student map: its Pearson r with the
  reference map (on the unscaled maps, as `agreement.map_agreement` computes it, so it matches the
  table) and the student's prediction (red where it differs from the explained class);
- one row per student, "<student> − <reference>": the difference of the scaled maps on a diverging
  colormap, with one symmetric colour bar whose range is the largest difference in the figure, so
  that small changes are visible and rows compare with each other.

Built on a bare matplotlib Figure with the Agg canvas (no pyplot state, no display needed);
`save_png` writes it atomically.
"""

import io
import os
import textwrap
from pathlib import Path
from typing import Dict
from typing import Mapping
from typing import Optional
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nncf_wcam.evaluation.agreement import map_agreement
from nncf_wcam.evaluation.localization import min_max_normalize
from nncf_wcam.evaluation.localization import resize_maps
from nncf_wcam.io.atomic import atomic_write_bytes

MAP_CMAP = "inferno"
DIFFERENCE_CMAP = "RdBu_r"  # blue: the student attributes less than the reference, red: more
MISMATCH_COLOR = "tab:red"
PANEL_INCHES = 1.35
COLOUR_BAR_WIDTH = 0.08  # of a panel's width
TITLE_CHARS_PER_INCH = 12  # at 10 pt: title lines wrap to the figure's width
INPUT_ROW = "input"


def difference_label(student: str, reference: str) -> str:
    return f"{student} − {reference}"


def _as_images(images) -> np.ndarray:
    """B x H x W (gray) or B x H x W x 3 arrays from B x C x H x W or B x H x W tensors."""
    images = torch.as_tensor(images).detach().cpu().float()
    if images.dim() == 4:
        images = images[:, 0] if images.shape[1] == 1 else images.permute(0, 2, 3, 1)
    return images.numpy()


def _scaled(maps, size) -> np.ndarray:
    """Each map min-max scaled to [0, 1], then brought to the image size (bilinear keeps [0, 1])."""
    maps = torch.as_tensor(maps).detach().cpu().float()
    return resize_maps(min_max_normalize(maps), size).numpy()


def per_sample_pearson(reference_maps, student_maps, size) -> np.ndarray:
    """Pearson r per sample, as the report computes it; maps of different resolutions meet at `size`."""
    reference = torch.as_tensor(reference_maps).detach().cpu().float()
    student = torch.as_tensor(student_maps).detach().cpu().float()
    if reference.shape != student.shape:
        reference, student = resize_maps(reference, size), resize_maps(student, size)
    return map_agreement(reference, student)["pearson"]


def _outline(ax, picture: np.ndarray, color: str) -> None:
    """The input's outline over a map, so one sees where the object is without hiding the map's colours."""
    gray = picture.mean(-1) if picture.ndim == 3 else picture
    low, high = float(gray.min()), float(gray.max())
    if high > low:
        ax.contour(gray, levels=[(low + high) / 2], colors=color, linewidths=0.7, alpha=0.8)


def _bare(ax, label: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_label(label)  # the row's name, for whoever inspects the figure (tests)


def _colour_bar(fig: Figure, image, cell, label: str) -> None:
    colour_bar = fig.colorbar(image, cax=fig.add_subplot(cell))
    colour_bar.ax.set_label("<colorbar>")  # what matplotlib names the colour bars it places itself
    colour_bar.set_label(label, fontsize=8)


def _draw_inputs(axes, pictures, explained, labels, column_titles) -> None:
    for column, ax in enumerate(axes):
        ax.imshow(pictures[column], cmap="gray")
        _bare(ax, INPUT_ROW)
        if column_titles is not None:
            ax.set_title(column_titles[column], fontsize=9)
        elif explained is not None:
            title = f"class {explained[column]}" + ("" if labels is None else f"\nlabel {labels[column]}")
            wrong = labels is not None and labels[column] != explained[column]
            ax.set_title(title, fontsize=9, color=MISMATCH_COLOR if wrong else "black")


def _draw_model_row(axes, label, maps, pictures, pearson, predictions, explained):
    """One model's maps; under a student's: its r with the reference and its prediction. Returns the last image."""
    image = None
    for column, ax in enumerate(axes):
        image = ax.imshow(maps[column], cmap=MAP_CMAP, vmin=0.0, vmax=1.0)
        _outline(ax, pictures[column], "white")
        _bare(ax, label)
        if label not in pearson:
            continue
        note, color = f"r {pearson[label][column]:.2f}", "black"
        if predictions is not None and label in predictions:
            predicted = int(predictions[label][column])
            note += f" · pred {predicted}"
            if explained is not None and predicted != explained[column]:
                color = MISMATCH_COLOR
        ax.set_xlabel(note, fontsize=8, color=color, labelpad=2)
    return image


def _draw_difference_row(axes, label, differences, pictures, limit):
    image = None
    for column, ax in enumerate(axes):
        image = ax.imshow(differences[column], cmap=DIFFERENCE_CMAP, vmin=-limit, vmax=limit)
        _outline(ax, pictures[column], "0.35")
        _bare(ax, label)
        ax.set_xlabel(f"max |Δ| {np.abs(differences[column]).max():.2f}", fontsize=8, labelpad=2)
    return image


def _title(reference_label, method, layer, target_rule, explained, column_titles, labels, predictions, width) -> str:
    where = method + ("" if layer is None else f" at layer {layer}")
    rule = f"for {target_rule}" + (" (column titles)" if explained is not None and column_titles is None else "")
    legend = [f"r: Pearson correlation with the {reference_label}'s map"]
    if predictions:
        legend.append("pred: the student's top-1 class")
    if labels is not None or predictions:
        legend.append("red: differs from the true label (titles) or from the explained class (pred)")
    line = int(TITLE_CHARS_PER_INCH * width)
    return "\n".join(textwrap.wrap(f"{where}, {rule}", line) + textwrap.wrap(" · ".join(legend), line))


def _grid(count: int, rows: list) -> tuple:
    """(figure, its gridspec, axes[row][column]); a narrow last column holds the colour bars so that panels line up."""
    width = PANEL_INCHES * (count + COLOUR_BAR_WIDTH) + 3.2  # + row labels and the colour bars' ticks and labels
    fig = Figure(figsize=(width, PANEL_INCHES * 1.12 * len(rows) + 0.9), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.1, h_pad=0.05)  # a margin around the row labels at the left edge
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(rows), count + 1, width_ratios=[1.0] * count + [COLOUR_BAR_WIDTH])
    axes = np.array([[fig.add_subplot(grid[row, column]) for column in range(count)] for row in range(len(rows))])
    for row, label in enumerate(rows):
        axes[row, 0].set_ylabel(label.replace(" − ", "\n− "), fontsize=9, rotation=0, ha="right", va="center", labelpad=6)
    return fig, grid, axes, width


def attribution_figure(
    images,
    reference_maps,
    student_maps: Mapping[str, object],
    *,
    reference_label: str = "teacher",
    method: str = "Grad-CAM",
    layer: Optional[str] = None,
    explained_classes: Optional[Sequence[int]] = None,
    target_rule: str = "the teacher's top-1 class",
    true_labels: Optional[Sequence[int]] = None,
    predictions: Optional[Mapping[str, Sequence[int]]] = None,
    column_titles: Optional[Sequence[str]] = None,
    difference: bool = True,
) -> Figure:
    """The figure described in the module docstring.

    images: B x C x H x W (or B x H x W); reference_maps and each of student_maps: B x h x w maps (any
    resolution, drawn at the image's); explained_classes: the class each column's maps explain
    (chosen by `target_rule`); predictions: student label -> B predicted classes; column_titles
    replace the titles built from the classes and labels.
    """
    pictures = _as_images(images)
    count, size = len(pictures), pictures.shape[1:3]
    explained = None if explained_classes is None else [int(c) for c in explained_classes]
    labels = None if true_labels is None else [int(y) for y in true_labels]
    scaled = {reference_label: _scaled(reference_maps, size)}
    scaled.update({label: _scaled(maps, size) for label, maps in student_maps.items()})
    pearson = {label: per_sample_pearson(reference_maps, maps, size) for label, maps in student_maps.items()}
    differences = {label: scaled[label] - scaled[reference_label] for label in student_maps} if difference else {}
    largest = max((float(np.abs(d).max()) for d in differences.values()), default=0.0)
    limit = largest if largest > 0 else 1.0  # identical maps: a flat white row on a readable scale

    model_rows = list(scaled)
    difference_rows = [difference_label(label, reference_label) for label in differences]
    fig, grid, axes, width = _grid(count, [INPUT_ROW, *model_rows, *difference_rows])
    _draw_inputs(axes[0], pictures, explained, labels, column_titles)
    for row, label in enumerate(model_rows, start=1):
        map_image = _draw_model_row(axes[row], label, scaled[label], pictures, pearson, predictions, explained)
    for row, (label, name) in enumerate(zip(differences, difference_rows), start=1 + len(model_rows)):
        difference_image = _draw_difference_row(axes[row], name, differences[label], pictures, limit)
    _colour_bar(fig, map_image, grid[1 : 1 + len(model_rows), count], "attribution\n(each map min–max scaled)")
    if differences:
        _colour_bar(fig, difference_image, grid[1 + len(model_rows) :, count], f"student − {reference_label}\n(red: more, blue: less)")
    fig.suptitle(_title(reference_label, method, layer, target_rule, explained, column_titles, labels, predictions, width), fontsize=10)
    return fig


def save_png(fig: Figure, path: os.PathLike, dpi: int = 100) -> Path:
    """Writes the figure as a PNG, atomically (a reader never sees a half-written file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return atomic_write_bytes(path, buffer.getvalue())


def write_attribution_figure(path: os.PathLike, images, reference_maps, student_maps, **options) -> Figure:
    """`attribution_figure(...)`, saved to `path`; returns the figure (for inspection)."""
    fig = attribution_figure(images, reference_maps, student_maps, **options)
    save_png(fig, path)
    return fig


def plot_map_grid(images, rows: Dict[str, torch.Tensor], path: os.PathLike, titles: Optional[Sequence[str]] = None) -> Path:
    """Writes a PNG (atomically) of the images and one row per entry of `rows` (label -> B x h x w maps), the
    first entry being the reference the others are compared with."""
    (reference_label, reference_maps), *students = rows.items()
    fig = attribution_figure(images, reference_maps, dict(students), reference_label=reference_label, column_titles=titles)
    return save_png(fig, path)
