"""The conversion-error predictor (gqa_eval/variant/damage.py): each converted attention layer's relative
output error on the unconverted model's inputs. Zero where the conversion loses nothing (K/V heads of a
group already equal), growing as more heads share one, and the same measure for every family."""

from __future__ import annotations

import pytest
import torch
from conftest import make_decoder, make_t5

from gqa_eval import convert_to_gqa, family_of
from gqa_eval.variant.damage import conversion_error


def decoder_batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(3, 90, (1, 12), generator=gen)} for _ in range(n)]


def t5_batches(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(3, 90, (1, 12), generator=gen),
            "labels": torch.randint(3, 90, (1, 7), generator=gen),
        }
        for _ in range(n)
    ]


def with_equal_heads_per_group(model, groups: int):
    """``model`` with the K and V heads of each of ``groups`` contiguous groups made equal: mean pooling to
    ``groups`` heads then changes nothing the attention computes."""
    family = family_of(model)
    d = family.head_dim
    with torch.no_grad():
        for proj in family.kv_projections():
            w = proj.weight.view(groups, -1, d, proj.weight.shape[-1])
            w.copy_(w[:, :1].expand_as(w))
    return model


@pytest.mark.parametrize(
    ("make", "batches"),
    [(lambda: make_decoder("llama", n_heads=8), decoder_batches), (lambda: make_t5(n_heads=8), t5_batches)],
)
def test_a_lossless_conversion_scores_zero_and_a_lossy_one_does_not(make, batches):
    model = with_equal_heads_per_group(make(), 4)
    exact = conversion_error(model, lambda: convert_to_gqa(model, 4), batches(3))
    assert exact["value"] < 1e-10 and exact["examples"] == 3 and len(exact["layers"]) >= 2
    lossy = conversion_error(model, lambda: convert_to_gqa(model, 1), batches(3))  # the 4 groups differ
    assert lossy["value"] > 0.1 and lossy["max"] >= lossy["value"]


def test_the_error_grows_as_more_heads_share_one():
    values = []
    for g in (8, 4, 2, 1):
        model = make_decoder("qwen2", n_heads=8)  # K/V biases too
        values.append(
            conversion_error(model, lambda m=model, g=g: convert_to_gqa(m, g), decoder_batches(4))["value"]
        )
    assert values[0] == 0.0
    assert values == sorted(values) and values[-1] > values[1] > 0


def test_it_measures_the_conversion_it_was_given_and_leaves_it_applied():
    model = make_decoder("llama", n_heads=8)
    reference = make_decoder("llama", n_heads=8)
    convert_to_gqa(reference, 2)
    err = conversion_error(model, lambda: convert_to_gqa(model, 2), decoder_batches(2))
    assert family_of(model).kv_heads == 2 and err["value"] > 0
    ids = decoder_batches(1, seed=5)[0]["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_no_calibration_inputs_is_refused():
    model = make_decoder("llama", n_heads=4)
    with pytest.raises(ValueError, match="needs calibration inputs"):
        conversion_error(model, lambda: convert_to_gqa(model, 2), [])


QUICK = ["task=wmt_en_de", "limit=2", "task.max_new_tokens=4", "batch_size=2", "timing.roofline=false"]


def test_a_run_records_its_conversions_error_and_the_report_sets_it_against_quality(app, tmp_path):
    from conftest import read_csv

    from gqa_eval.report.plots import conversion_error_points
    from gqa_eval.report.summary import read_rows
    from gqa_eval.report.table import pivot

    for model in ("mha", "gqa4", "mqa"):
        code, _ = app(f"model={model}", *QUICK, f"output_root={tmp_path}")
        assert code == 0, code
    rows = {row["model"]: row for row in read_csv(tmp_path / "summary.csv")}
    assert rows["mha"]["conversion_error"] == ""  # nothing converted, nothing measured
    gqa4, mqa = float(rows["gqa4"]["conversion_error"]), float(rows["mqa"]["conversion_error"])
    assert 0 < gqa4 < mqa  # the bundled tiny_t5: 16 heads onto 4, then onto 1
    result = next(tmp_path.glob("runs/*_gqa4_*/result.json")).read_text()
    assert '"conversion_error": {' in result and '"layers": [' in result
    table = {row["model"]: row for row in read_csv(tmp_path / "table.csv")}
    assert float(table["mqa"]["conversion_error"]) == pytest.approx(mqa)
    points = conversion_error_points(pivot(read_rows(tmp_path)))
    assert [round(x, 9) for x, _, _ in points] == [round(gqa4, 9), round(mqa, 9)]
    assert (tmp_path / "conversion_error.png").stat().st_size > 0


def test_conversion_error_null_measures_nothing(app, tmp_path):
    from conftest import read_csv

    code, _ = app("model=gqa4", "conversion_error=null", *QUICK, f"output_root={tmp_path}")
    assert code == 0, code
    assert read_csv(tmp_path / "summary.csv")[0]["conversion_error"] == ""
