from __future__ import annotations

from sinks.analytics.report import render_table


def test_render_table_aligns_numbers_right_and_text_left() -> None:
    table = render_table([{"rule": "cart", "sent": 1200, "rate": 0.25}, {"rule": "browse", "sent": 3, "rate": 0.5}])
    lines = table.splitlines()
    assert lines[0].split() == ["rule", "sent", "rate"]
    assert lines[2].startswith("cart  ") and lines[2].endswith("0.25")
    assert " 1200 " in lines[2]
    assert render_table([]) == "(no rows)"
