"""LLaVA-NeXT's "anyres" tiling arithmetic, shared by the model (packing features) and the
front end (counting an image's tokens): the best grid resolution for an image, and the
rows/columns of the tiled feature map left after removing the letterbox padding."""
from __future__ import annotations


def best_resolution(height: int, width: int, pinpoints) -> tuple[int, int]:
    """The (h, w) of ``pinpoints`` that keeps most of the image's pixels once it is scaled to
    fit, then wastes the fewest (LLaVA-NeXT's rule)."""
    best, best_kept, best_waste = None, -1, None
    for h, w in pinpoints:
        scale = min(w / width, h / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        waste = h * w - kept
        if kept > best_kept or (kept == best_kept and waste < best_waste):
            best, best_kept, best_waste = (h, w), kept, waste
    return best


def unpadded_extent(height: int, width: int, rows: int, cols: int) -> tuple[int, int, int, int]:
    """(first row, end row, first col, end col) of a rows x cols feature map that holds the
    image (height x width) letterboxed: the padded band is cut evenly from both sides."""
    if width / height > cols / rows:
        new_h = int(round(height * (cols / width), 7))
        pad = (rows - new_h) // 2
        return pad, rows - pad, 0, cols
    new_w = int(round(width * (rows / height), 7))
    pad = (cols - new_w) // 2
    return 0, rows, pad, cols - pad


def anyres_layout(height: int, width: int, pinpoints, tile: int, side: int):
    """(grid rows, grid cols of tiles, unpadded extent) for an image; ``tile`` the tower's
    image size, ``side`` its patches per tile side."""
    h, w = best_resolution(height, width, pinpoints)
    gr, gc = h // tile, w // tile
    return gr, gc, unpadded_extent(height, width, gr * side, gc * side)


def anyres_token_count(height: int, width: int, pinpoints, tile: int, side: int) -> int:
    """Base tile (side^2) + the unpadded grid's rows x (columns + 1 newline)."""
    _, _, (r0, r1, c0, c1) = anyres_layout(height, width, pinpoints, tile, side)
    return side * side + (r1 - r0) * (c1 - c0 + 1)
