"""Numbers read back out of a built report.html: each summary and study cell carries its value as data-value."""
import re


def summary_value(html: str, metric: str, algorithm: str) -> float:
    """The value of the cell for `metric` and arm `algorithm`; fails naming both when the report has none."""
    m = re.search(rf'data-metric="{re.escape(metric)}" data-algorithm="{re.escape(algorithm)}" data-value="([^"]+)"',
                  html)
    assert m, f"no {metric} cell for {algorithm}"
    return float(m.group(1))
