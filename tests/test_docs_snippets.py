"""The Python snippets on the results pages recompute a number the page's prose states from
committed data or from the code: run each and check that it prints that number, so a page
cannot drift from what its snippet shows."""
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# page -> (a line its snippet must print, the phrase of the page's text that states it)
PAGES = {
    "docs/results/mnist.md": [("60000 training images: a = 0.0430", "against 0.0430 on 60,000"),
                              ("50000 training images: a = 0.0726", "a = 0.0726 after 40 epochs on 50,000")],
    "docs/results/mnist_resnet/README.md": [("10 of 13", "same rate for 10 of 13 arms")],
}


def snippets(page: str) -> list[str]:
    """The ```python blocks of ``page``, dedented by their fence's indentation."""
    text = open(os.path.join(REPO, page)).read()
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", text, flags=re.S | re.M)
    return ["".join(line[len(indent):] for line in body.splitlines(True)) for indent, body in blocks]


@pytest.mark.parametrize("page", sorted(PAGES))
def test_results_page_snippet_prints_what_the_page_states(page):
    blocks = snippets(page)
    assert len(blocks) == 1, f"{page}: expected one python snippet, found {len(blocks)}"
    text = open(os.path.join(REPO, page)).read()
    out = subprocess.run([sys.executable, "-c", blocks[0]], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert out.returncode == 0, out.stderr
    for printed, stated in PAGES[page]:
        assert printed in out.stdout, (page, out.stdout)
        assert stated in " ".join(text.split()), (page, stated)  # the prose states what the snippet prints
