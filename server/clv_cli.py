"""`centric clv`: customer lifetime value from a per-customer summary CSV, for analysts.

``centric clv fit --summary-csv FILE`` prints the fitted BG/NBD and Gamma-Gamma parameters as
JSON; ``centric clv predict --summary-csv FILE --horizon H [--output FILE]`` fits them and
writes, per customer, P(alive), the expected purchases in the next H time units and, when the
file has spend, the predicted (undiscounted) value. The models are
``experiments/customer_value.py``; no server, no Redis.

The CSV has a header with ``frequency`` (repeat purchases), ``recency`` (time from the first
purchase to the last), ``T`` (time from the first purchase to the end of the data) and
optionally ``monetary_value`` (mean value of the repeat purchases), all in one time unit of
the analyst's choice. A first column with any other name is the customer id, written back
exactly as given; other columns are ignored. Customers with repeat purchases but a zero
monetary_value are left out of the spend fit (a Gamma model has no zero spend) and are still
predicted.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

FREQUENCY, RECENCY, AGE, MONETARY = "frequency", "recency", "T", "monetary_value"
REQUIRED = (FREQUENCY, RECENCY, AGE)
KNOWN = (*REQUIRED, MONETARY)
ROW_ID = "row"  # the id column's name when the file has none: 1-based data row numbers


class InputError(ValueError):
    """The summary file cannot be used; the message names the file, row and column."""


@dataclass(frozen=True, slots=True)
class Summary:
    """The customers of a summary CSV, validated."""

    id_name: str
    ids: list[str]
    frequency: list[float]
    recency: list[float]
    age: list[float]
    monetary: list[float] | None


def add_parser(subparsers: Any) -> None:
    """Add `clv fit` and `clv predict` to the `centric` command's subparsers."""
    p_clv = subparsers.add_parser(
        "clv", help="customer lifetime value (BG/NBD and Gamma-Gamma) from a summary CSV")
    clv_sub = p_clv.add_subparsers(dest="clv_command", required=True)
    csv_help = ("CSV with columns frequency, recency, T and optionally monetary_value (any one "
                "time unit); a first column with another name is the customer id")
    p_fit = clv_sub.add_parser("fit", help="fit the models; print their parameters as JSON "
                                           "(gamma_gamma null without monetary_value)")
    p_fit.add_argument("--summary-csv", type=Path, required=True, help=csv_help)
    p_predict = clv_sub.add_parser("predict", help="fit, then write per customer p_alive, "
                                                   "expected_purchases and predicted_value")
    p_predict.add_argument("--summary-csv", type=Path, required=True, help=csv_help)
    p_predict.add_argument("--horizon", type=float, required=True,
                           help="prediction horizon, in the time unit of recency and T")
    p_predict.add_argument("--output", type=Path, help="CSV file to write (default: stdout)")


def _number(text: str, where: str, column: str) -> float:
    """Parse one cell as a finite non-negative number, or raise InputError."""
    cell = text.strip()
    if not cell:
        raise InputError(f"{where}, column '{column}': empty cell")
    try:
        value = float(cell)
    except ValueError:
        raise InputError(f"{where}, column '{column}': {cell!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}, column '{column}': {cell!r} is not a finite number")
    if value < 0:
        raise InputError(f"{where}, column '{column}': {cell} is negative")
    return value


def read_summary(path: Path) -> Summary:
    """Read and validate a summary CSV; InputError names the file, row and column of a fault."""
    try:
        # utf-8-sig: spreadsheets often start their CSV exports with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as f:
            return _parse(path, csv.reader(f))
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except csv.Error as exc:
        raise InputError(f"{path} is not a valid CSV file: {exc}") from None


def _parse(path: Path, reader: Any) -> Summary:
    """Validate the rows of a summary CSV (see read_summary)."""
    header = next(reader, None)
    if header is None or not any(cell.strip() for cell in header):
        raise InputError(f"{path} is empty: it needs a header row with "
                         f"{', '.join(REQUIRED)}")
    names = [cell.strip() for cell in header]
    for name in KNOWN:
        if names.count(name) > 1:
            raise InputError(f"{path}: column '{name}' appears {names.count(name)} times")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise InputError(f"{path}: missing column {', '.join(repr(m) for m in missing)} "
                         f"(header: {', '.join(names)}; needs {', '.join(REQUIRED)} and "
                         f"optionally {MONETARY})")
    index = {name: names.index(name) for name in KNOWN if name in names}
    id_index = 0 if names[0] not in KNOWN else None
    last = max(index.values())  # trailing columns the models do not read may be left out
    columns: dict[str, list[float]] = {name: [] for name in index}
    ids: list[str] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # blank lines, and the empty ",,," rows spreadsheets leave at the end
        number = len(ids) + 1
        where = f"{path} row {number} (line {reader.line_num})"
        if len(row) <= last:
            raise InputError(f"{where}: {len(row)} fields, but column '{names[last]}' is "
                             f"field {last + 1} of the header")
        values = {name: _number(row[i], where, name) for name, i in index.items()}
        frequency, recency, age = values[FREQUENCY], values[RECENCY], values[AGE]
        if frequency != math.floor(frequency):
            raise InputError(f"{where}, column '{FREQUENCY}': {row[index[FREQUENCY]].strip()} "
                             "is not a whole number of repeat purchases")
        if recency > age:
            raise InputError(f"{where}, column '{RECENCY}': {row[index[RECENCY]].strip()} is "
                             f"greater than {AGE} ({row[index[AGE]].strip()})")
        for name, value in values.items():
            columns[name].append(value)
        ids.append(row[id_index] if id_index is not None else str(number))
    if not ids:
        raise InputError(f"{path} has a header but no customers")
    return Summary(id_name=names[0] if id_index is not None else ROW_ID, ids=ids,
                   frequency=columns[FREQUENCY], recency=columns[RECENCY], age=columns[AGE],
                   monetary=columns.get(MONETARY))


def _cell(value: float) -> str:
    """Format a prediction: shortest round-trip decimal; empty when undefined."""
    return repr(float(value)) if math.isfinite(value) else ""


def run(args: argparse.Namespace, out: IO[str]) -> int:
    """Run `clv fit` or `clv predict`; 0 on success, 2 on bad input, 1 if output fails."""
    # Imported here: numpy and scipy are not loaded by the other `centric` commands.
    from experiments import customer_value as cv

    command = f"centric clv {args.clv_command}"
    horizon = getattr(args, "horizon", None)
    try:
        if horizon is not None and not (math.isfinite(horizon) and horizon >= 0):
            raise InputError(f"--horizon must be a non-negative number, not {horizon}")
        summary = read_summary(args.summary_csv)
        model = cv.fit_customer_value(summary.frequency, summary.recency, summary.age,
                                      summary.monetary)
    except InputError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # FitError: data the models cannot be fitted to
        print(f"{command}: error: {args.summary_csv}: {exc}", file=sys.stderr)
        return 2
    spend = model.gamma_gamma
    if args.clv_command == "fit":
        out.write(json.dumps({"bgnbd": model.bgnbd.to_json(),
                              "gamma_gamma": spend.to_json() if spend else None},
                             indent=2) + "\n")
        return 0
    alive = cv.p_alive(model.bgnbd, summary.frequency, summary.recency, summary.age)
    purchases = cv.expected_purchases(model.bgnbd, float(args.horizon), summary.frequency,
                                      summary.recency, summary.age)
    header = [summary.id_name, "p_alive", "expected_purchases"]
    values = [alive, purchases]
    if spend is not None and summary.monetary is not None:
        value = purchases * cv.expected_spend(spend, summary.frequency, summary.monetary)
        header.append("predicted_value")
        values.append(value)
        if not all(math.isfinite(v) for v in value):
            print(f"{command}: warning: the fitted spend model has no finite mean "
                  f"(q = {spend.q:.4g}): predicted_value is left empty where it is undefined",
                  file=sys.stderr)
    try:
        if args.output:
            with args.output.open("w", newline="") as f:
                _write(f, header, summary.ids, values)
        else:
            _write(out, header, summary.ids, values)
    except BrokenPipeError:
        # The reader stopped early (`| head`): no message, and no second error at exit.
        _discard_rest(out)
        return 1
    except OSError as exc:
        print(f"{command}: cannot write {args.output or 'stdout'}: {exc.strerror or exc}",
              file=sys.stderr)
        return 1
    print(f"{len(summary.ids)} rows", file=sys.stderr)
    return 0


def _discard_rest(out: IO[str]) -> None:
    """Point a closed pipe's descriptor at /dev/null, so the interpreter's final flush passes."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests' StringIO)
        pass


def _write(f: IO[str], header: list[str], ids: list[str], columns: list[Any]) -> None:
    """Write the predictions as CSV, one row per customer in the input's order."""
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(header)
    for i, customer in enumerate(ids):
        writer.writerow([customer, *(_cell(column[i]) for column in columns)])
