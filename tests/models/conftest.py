"""A real scikit-learn model, trained once on iris, and graphs that serve it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.3, 3.3, 6.0, 2.5]


@pytest.fixture(scope="session")
def iris_model() -> Any:
    features, labels = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(features, labels)


@pytest.fixture(scope="session")
def iris_file(iris_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("models") / "iris.joblib"
    joblib.dump(iris_model, path)
    return path


def oip(rows: list[list[float]], **extra: Any) -> dict[str, Any]:
    """An Open Inference Protocol v2 request for iris rows."""
    return {
        "inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}],
        **extra,
    }
