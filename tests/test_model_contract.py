"""The record encoder (the serving path) against the frame encoder (training's path)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from core import model_contract
from core.errors import InvalidInput
from core.model_contract import Contract, Feature

CONTRACT = Contract(
    features=(
        Feature("amount", "numeric", "float64"),
        Feature("code", "category", "int64", ("7", "8", "9")),
        Feature("plan", "category", "object", ("basic", "pro")),
        Feature("seen", "datetime", "datetime64[ns, UTC]"),
    ),
    target="churned", task="binary", classes=(0, 1),
)

# Every branch of the record encoder: JSON's float/int/str/None, and the values a
# Python caller may pass (bools, NumPy scalars, numbers as text, NaN and pandas' NA).
RECORDS = [
    {"amount": 1.5, "code": 7, "plan": "basic", "seen": "2024-01-02T03:04:05Z"},
    {"amount": 3, "code": 8.0, "plan": "pro", "seen": "2024-01-02"},
    {"amount": None, "code": None, "plan": None, "seen": None},
    {"amount": float("nan"), "code": "9", "plan": "gold", "seen": pd.Timestamp("2020-05-01")},
    {"amount": np.float32(2.5), "code": np.int64(9), "plan": "pro", "seen": pd.NaT},
    {"amount": True, "code": 10, "plan": pd.NA, "seen": "2024-01-02T03:04:05+02:00"},
    {"amount": "4.25", "code": np.nan, "plan": "basic", "seen": "2023-12-31", "extra": 1},
    {"amount": np.int16(-2), "code": "7", "plan": "basic", "seen": "2024-06-30T00:00:00"},
]


def test_records_encode_like_the_frame():
    by_records = model_contract.encode_records(CONTRACT, RECORDS)
    frame = pd.DataFrame.from_records(RECORDS)
    frame["amount"] = pd.to_numeric(frame["amount"].astype(object).map(
        lambda v: float(v) if v is not None and v is not pd.NA else math.nan))
    frame["seen"] = pd.to_datetime(frame["seen"].astype(object).map(
        lambda v: None if v is None or v is pd.NaT else pd.Timestamp(v)), utc=True, format="mixed")
    by_frame = model_contract.encode_frame(CONTRACT, frame)
    np.testing.assert_array_equal(by_records.matrix, by_frame.matrix)
    assert by_records.unseen_categories == by_frame.unseen_categories == {"code": 1, "plan": 1}
    assert by_records.ignored_columns == ("extra",)


def test_pinned_values():
    matrix = model_contract.encode_records(CONTRACT, RECORDS[:2]).matrix
    assert matrix[0].tolist() == [1.5, 0.0, 0.0, 1704164645.0]
    assert matrix[1].tolist() == [3.0, 1.0, 1.0, 1704153600.0]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"code": 7, "plan": "pro", "seen": None}, "record 0 has no field 'amount'"),
        ({"amount": "many", "code": 7, "plan": "pro", "seen": None},
         "field 'amount' of record 0 must be a number"),
        ({"amount": [1], "code": 7, "plan": "pro", "seen": None},
         "field 'amount' of record 0 must be a number"),
        ({"amount": 1, "code": 7, "plan": "pro", "seen": "soon"},
         "field 'seen' of record 0 must be a date or time"),
        ({"amount": 1, "code": 7, "plan": "pro", "seen": 5},
         "field 'seen' of record 0 must be a date or time"),
    ],
)
def test_bad_values_are_named(record, message):
    with pytest.raises(InvalidInput, match=message):
        model_contract.encode_records(CONTRACT, [record])


def test_not_a_record():
    with pytest.raises(InvalidInput, match="record 1 must be an object"):
        model_contract.encode_records(CONTRACT, [RECORDS[0], ["amount", 1]])


def test_binary_columns_match_column_stack():
    raw = np.array([0.0, 0.25, 0.5, 1.0, 0.1234567])
    np.testing.assert_array_equal(model_contract.binary_columns(raw),
                                  np.column_stack([1.0 - raw, raw]))
