"""The variant study files users copy validate: ``ablate study FILE --dry-run`` plans them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.cli import main

STUDIES = Path(__file__).resolve().parents[2] / "studies"
# file -> (trials, one planned line that must appear)
FILES = {
    "rfp_seqpool_digits.yaml": (25, "variant=alpha_remix:alpha=-1,beta=1 seed=4"),
    "rfp_alpha_grid.yaml": (70, "variant=alpha_remix:alpha=0.25,beta=1 apply_to=seqpool"),
    "rfp_alpha_grid_cifar10.yaml": (
        70,
        "variant=alpha_remix:alpha=-0.5,beta=1 apply_to=attention",
    ),
    "related_variants.yaml": (30, "variant=softmax_v:alpha=learned,alpha_shape=head seed=4"),
}


@pytest.mark.parametrize("name", sorted(FILES))
def test_study_file_validates_with_dry_run(name, workdir, capsys):
    trials, line = FILES[name]
    assert main(["study", str(STUDIES / name), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"trial {trials}/{trials}:" in out and line in out
