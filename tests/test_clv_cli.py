"""`centric clv fit` and `centric clv predict` (server/clv_cli.py), run in this process."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from experiments.customer_value import (
    expected_purchases,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    p_alive,
)
from tests.support import run_cli as run
from tests.test_customer_value import FH_2013, FHL_2005, lifetimes_dataset

# Eight customers, ids with leading zeros; times in days.
SMALL = """customer_id,frequency,recency,T,monetary_value,segment
007,2,30,40,22.5,a
0100,1,2,40,11.0,b
3,0,0,40,0,a
004,5,35,38,30.25,c
05,0,0,12,0,b
6,3,20,21,8.0,a
7,1,10,30,15.0,c
8,4,39,40,19.5,a
"""


def write(tmp_path: Path, text: str, name: str = "summary.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def columns(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def small_arrays() -> tuple[np.ndarray, ...]:
    _, rows = columns(SMALL)
    return tuple(np.array([float(r[i]) for r in rows]) for i in (1, 2, 3, 4))


def test_fit_prints_the_published_cdnow_parameters(capsys) -> None:
    path = lifetimes_dataset("cdnow_customers_summary.csv")  # ID, frequency, recency, T
    status, out, err = run(capsys, "clv", "fit", "--summary-csv", str(path))
    assert status == 0, err
    result = json.loads(out)
    assert set(result) == {"bgnbd", "gamma_gamma"}
    assert result["gamma_gamma"] is None  # no monetary_value column
    for name, published in FHL_2005.items():
        assert result["bgnbd"][name] == pytest.approx(published, rel=0.01)


def test_fit_with_spend(tmp_path: Path, capsys) -> None:
    # The spend file's columns are FHL's (ID, x, t_x, T, zbar); the CLI takes lifetimes' names.
    source = lifetimes_dataset("cdnow_customers_summary_with_transactions.csv")
    lines = source.read_text().splitlines()
    assert lines[0] == "ID,x,t_x,T,zbar"
    path = write(tmp_path, "\n".join(["ID,frequency,recency,T,monetary_value", *lines[1:]]))
    status, out, err = run(capsys, "clv", "fit", "--summary-csv", str(path))
    assert status == 0, err
    spend = json.loads(out)["gamma_gamma"]
    for name, published in FH_2013.items():
        assert spend[name] == pytest.approx(published, rel=0.01)


def test_predict_keeps_ids_and_order(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, SMALL)
    status, out, err = run(capsys, "clv", "predict", "--summary-csv", str(path),
                           "--horizon", "90")
    assert status == 0, err
    header, rows = columns(out)
    assert header == ["customer_id", "p_alive", "expected_purchases", "predicted_value"]
    assert [r[0] for r in rows] == ["007", "0100", "3", "004", "05", "6", "7", "8"]
    x, tx, T, m = small_arrays()
    bgnbd, spend = fit_bgnbd(x, tx, T), fit_gamma_gamma(x, m)
    purchases = expected_purchases(bgnbd, 90, x, tx, T)
    got = np.array([[float(v) for v in r[1:]] for r in rows])
    np.testing.assert_allclose(got[:, 0], p_alive(bgnbd, x, tx, T), rtol=1e-12)
    np.testing.assert_allclose(got[:, 1], purchases, rtol=1e-12)
    np.testing.assert_allclose(got[:, 2], purchases * expected_spend(spend, x, m), rtol=1e-12)
    assert got[2, 0] == 1.0 and got[0, 0] < 1.0  # no repeat purchase: alive by definition
    assert "8 rows" in err


def test_predict_to_a_file_and_without_spend_or_ids(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, "frequency,recency,T\n2,30,40\n0,0,40\n5,35,38\n1,3,9\n")
    target = tmp_path / "out.csv"
    status, out, err = run(capsys, "clv", "predict", "--summary-csv", str(path),
                           "--horizon", "30", "--output", str(target))
    assert status == 0, err
    assert out == ""
    header, rows = columns(target.read_text())
    assert header == ["row", "p_alive", "expected_purchases"]  # no id column: row numbers
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    assert all(float(r[2]) > 0 for r in rows)


def test_id_column_is_kept_verbatim_and_extra_columns_ignored(tmp_path: Path, capsys) -> None:
    text = SMALL.replace("customer_id", "id").replace("007,", '" 007",')
    path = write(tmp_path, "\ufeff" + text)  # a spreadsheet's byte-order mark
    status, out, err = run(capsys, "clv", "predict", "--summary-csv", str(path),
                           "--horizon", "10")
    assert status == 0, err
    header, rows = columns(out)
    assert header[0] == "id"
    assert rows[0][0] == " 007"


@pytest.mark.parametrize(("text", "expected"), [
    ("customer_id,frequency,T\n1,2,10\n", ["missing column 'recency'"]),
    ("customer_id,frequency,recency,T\n1,2,3,10\n2,1,x,10\n",
     ["row 2 (line 3)", "column 'recency'", "'x' is not a number"]),
    ("customer_id,frequency,recency,T\n1,2,3,10\n2,1,,10\n", ["row 2", "'recency'", "empty"]),
    ("customer_id,frequency,recency,T\n1,-2,3,10\n", ["row 1", "column 'frequency'",
                                                      "negative"]),
    ("customer_id,frequency,recency,T\n1,2,3,10\n2,1,12,10\n",
     ["row 2", "column 'recency'", "greater than T"]),
    ("customer_id,frequency,recency,T,monetary_value\n1,2,3,10,5\n2,1,2,10,-4\n",
     ["row 2", "column 'monetary_value'", "negative"]),
    ("customer_id,frequency,recency,T\n1,2.5,3,10\n", ["row 1", "'frequency'", "whole number"]),
    ("customer_id,frequency,recency,T\n1,2,3,inf\n", ["row 1", "column 'T'", "finite"]),
    ("customer_id,frequency,recency,T\n1,2,3\n", ["row 1", "column 'T'"]),
    ("customer_id,frequency,recency,T\n", ["no customers"]),
    ("", ["empty"]),
    ("customer_id,frequency,recency,T\n1,0,0,10\n2,0,0,4\n", ["repeat purchases"]),
])
def test_bad_input_exits_2_naming_row_and_column(tmp_path: Path, capsys, text: str,
                                                 expected: list[str]) -> None:
    path = write(tmp_path, text)
    for command in (["fit"], ["predict", "--horizon", "10"]):
        status, out, err = run(capsys, "clv", *command, "--summary-csv", str(path))
        assert status == 2
        assert out == ""
        assert "Traceback" not in err
        assert err.startswith(f"centric clv {command[0]}: error: ")
        for fragment in expected:
            assert fragment in err


def test_missing_file_and_bad_horizon_exit_2(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.csv"
    status, out, err = run(capsys, "clv", "fit", "--summary-csv", str(missing))
    assert status == 2 and out == ""
    assert f"cannot read {missing}" in err
    path = write(tmp_path, SMALL)
    for horizon in ("-1", "nan"):
        status, out, err = run(capsys, "clv", "predict", "--summary-csv", str(path),
                               "--horizon", horizon)
        assert status == 2 and out == "" and "--horizon" in err
    status, _, err = run(capsys, "clv", "predict", "--summary-csv", str(path))
    assert status == 2 and "--horizon" in err  # argparse: required


def test_unwritable_output_exits_1(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, SMALL)
    status, _, err = run(capsys, "clv", "predict", "--summary-csv", str(path), "--horizon", "5",
                         "--output", str(tmp_path / "no-such-dir" / "out.csv"))
    assert status == 1
    assert "cannot write" in err and "Traceback" not in err
