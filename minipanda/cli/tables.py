"""Plain-text tables for the ``minipanda`` commands (one definition, shared by every CLI module)."""


def print_table(headers, rows):
    """Left-aligned columns as wide as their widest cell; None shows as empty; "(none)" when there are no rows."""
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    if not rows:
        print("(none)")
