"""Open Inference Protocol v2 codecs: request decoding and validation, outputs, metadata."""

from __future__ import annotations

import doctest
import enum
import json
import sys
from typing import Any

import msgspec
import numpy as np
import pytest

from servegraph.errors import MissingDependencyError, ProtocolError
from servegraph.protocol import v2
from servegraph.protocol.metadata import error_body, model_metadata, server_metadata
from servegraph.protocol.v2 import (
    DATATYPES,
    InferRequest,
    InferResponse,
    RequestInput,
    RequestOutput,
    ResponseOutput,
    decode_request,
    encode_output,
    encode_response,
    input_array,
    input_list,
    is_v2_request,
    response_dict,
    select_outputs,
)

ALL = list(DATATYPES)
NUMERIC = [name for name in ALL if name not in ("BOOL", "BYTES")]


def sample(datatype: str, count: int = 4) -> list[Any]:
    """``count`` valid values of a datatype."""
    if datatype == "BOOL":
        return [i % 2 == 0 for i in range(count)]
    if datatype == "BYTES":
        return [f"s{i}" for i in range(count)]
    if datatype.startswith("FP"):
        return [i + 0.5 if i % 2 else i for i in range(count)]  # ints and floats mixed
    return list(range(count))


def tensor(data: Any, shape: Any, datatype: str = "FP32", name: str = "x") -> dict[str, Any]:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def body(*tensors: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({"inputs": list(tensors), **fields}).encode()


def decode_error(payload: bytes | str | dict[str, Any]) -> str:
    with pytest.raises(ProtocolError) as info:
        decode_request(payload)
    return str(info.value)


# --------------------------------------------------------------------------- datatypes


def test_datatypes_map_every_oip_type_to_a_numpy_dtype_name() -> None:
    assert DATATYPES == {
        "BOOL": "bool",
        "UINT8": "uint8",
        "UINT16": "uint16",
        "UINT32": "uint32",
        "UINT64": "uint64",
        "INT8": "int8",
        "INT16": "int16",
        "INT32": "int32",
        "INT64": "int64",
        "FP16": "float16",
        "FP32": "float32",
        "FP64": "float64",
        "BYTES": "object",
    }
    for dtype in DATATYPES.values():
        assert np.dtype(dtype).name == dtype


# --------------------------------------------------------------------------- valid requests


@pytest.mark.parametrize("datatype", ALL)
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
@pytest.mark.parametrize("count", [4, 64], ids=["small", "large"])
def test_a_valid_request_decodes_to_an_array_of_the_datatype(
    datatype: str, nested: bool, count: int
) -> None:
    values = sample(datatype, count)
    shape = [count // 2, 2]
    data = [values[i : i + 2] for i in range(0, count, 2)] if nested else values
    request = decode_request(body(tensor(data, shape, datatype)))
    item = request.inputs[0]
    assert item.data == values  # always flat after decoding
    array = input_array(item)
    assert array.dtype == np.dtype(DATATYPES[datatype])
    assert array.shape == (count // 2, 2)
    assert array.ravel().tolist() == values


@pytest.mark.parametrize("datatype", ALL)
def test_a_decoded_dict_validates_like_json(datatype: str) -> None:
    payload = {"inputs": [tensor(sample(datatype, 32), [4, 8], datatype)]}
    from_dict = decode_request(payload)
    assert from_dict == decode_request(json.dumps(payload))
    assert input_array(from_dict.inputs[0]).shape == (4, 8)


def test_request_fields_are_kept() -> None:
    request = decode_request(
        body(
            {**tensor([1.0], [1]), "parameters": {"content_type": "np"}},
            id="req-1",
            parameters={"priority": 2},
            outputs=[{"name": "y", "parameters": {"binary_data": False}}],
        )
    )
    assert request.id == "req-1"
    assert request.parameters == {"priority": 2}
    assert request.inputs[0].parameters == {"content_type": "np"}
    assert request.outputs == [RequestOutput("y", {"binary_data": False})]


def test_unknown_fields_are_ignored() -> None:
    request = decode_request(body(tensor([1], [1]), model="m"))
    assert request.inputs[0].name == "x"


def test_optional_fields_default_to_none() -> None:
    request = decode_request(body(tensor([1], [1])))
    assert (request.id, request.parameters, request.outputs) == (None, None, None)
    assert request.inputs[0].parameters is None


def test_a_str_body_is_accepted() -> None:
    assert decode_request(body(tensor([1], [1])).decode()).inputs[0].data == [1]


def test_three_dimensional_nested_data_is_flattened_row_major() -> None:
    data = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 10], [11, 12]]]
    item = decode_request(body(tensor(data, [2, 3, 2], "INT32"))).inputs[0]
    assert item.data == list(range(1, 13))
    assert input_list(item) == data
    assert input_array(item).tolist() == data


def test_zero_sized_dimensions_are_allowed() -> None:
    flat = decode_request(body(tensor([], [0, 4]))).inputs[0]
    nested = decode_request(body(tensor([[], []], [2, 0], "BOOL"))).inputs[0]
    assert input_array(flat).shape == (0, 4)
    assert input_array(nested).shape == (2, 0)
    assert input_list(nested) == [[], []]
    deeper = decode_request(body(tensor([[], []], [2, 0, 3], "INT8"))).inputs[0]
    assert input_array(deeper).shape == (2, 0, 3)
    assert input_list(deeper) == [[], []]


def test_a_bare_value_fills_a_one_value_tensor() -> None:
    scalar = decode_request(body(tensor("hello", [], "BYTES"))).inputs[0]
    assert scalar.data == ["hello"]
    assert input_array(scalar).shape == ()
    assert input_list(scalar) == ["hello"]
    assert decode_request(body(tensor(3, [1], "INT64"))).inputs[0].data == [3]


def test_integer_type_bounds_are_inclusive() -> None:
    for datatype, low, high in [
        ("INT8", -128, 127),
        ("UINT8", 0, 255),
        ("INT64", -(2**63), 2**63 - 1),
        ("UINT64", 0, 2**64 - 1),
    ]:
        for count in (2, 20):
            data = [low, high] * (count // 2)
            item = decode_request(body(tensor(data, [count], datatype))).inputs[0]
            assert input_array(item).tolist() == data


def test_infinities_are_valid_floats_in_a_dict_body() -> None:
    item = decode_request({"inputs": [tensor([float("inf"), -float("inf")], [2])]}).inputs[0]
    assert input_array(item).tolist() == [float("inf"), -float("inf")]


def test_bytes_values_are_accepted_in_a_dict_body() -> None:
    item = decode_request({"inputs": [tensor([b"a", "b"], [2], "BYTES")]}).inputs[0]
    assert input_array(item).tolist() == [b"a", "b"]


# --------------------------------------------------------------------------- invalid requests


def test_a_length_mismatch_names_the_input_and_the_counts() -> None:
    message = decode_error(body(tensor([1, 2, 3, 4, 5], [2, 3])))
    assert message == "input 'x': shape [2, 3] needs 6 values, got 5"


def test_nested_data_with_the_wrong_row_count_is_rejected() -> None:
    message = decode_error(body(tensor([[1, 2, 3]], [2, 3])))
    assert "input 'x': nested data is ragged or does not match shape [2, 3]" in message
    assert "expected lists of 2 values at depth 0, got a list of 1" in message


@pytest.mark.parametrize("rows", [1, 2, 40])
def test_ragged_nested_data_is_rejected(rows: int) -> None:
    data: list[Any] = [[1.0, 2.0, 3.0] for _ in range(rows)]
    data[-1] = [1.0, 2.0]
    message = decode_error(body(tensor(data, [rows, 3])))
    assert f"does not match shape [{rows}, 3]" in message
    assert "expected lists of 3 values at depth 1, got a list of 2" in message


def test_a_value_in_place_of_a_row_is_rejected() -> None:
    message = decode_error(body(tensor([[1, 2], 3, 4], [3, 2])))
    assert "expected lists of 2 values at depth 1, got int 3" in message


@pytest.mark.parametrize("count", [2, 32])
def test_data_nested_deeper_than_the_shape_is_rejected(count: int) -> None:
    data: list[Any] = [[1.0, 2.0] for _ in range(count // 2)]
    data[-1] = [1.0, [2.0]]
    message = decode_error(body(tensor(data, [count // 2, 2])))
    assert "nested deeper than shape" in message
    assert f"flat index {count - 1}" in message


def test_flat_data_holding_a_list_is_rejected() -> None:
    message = decode_error(body(tensor([1, [2]], [2])))
    assert "value [2] (list, nested deeper than shape [2]) at flat index 1" in message


@pytest.mark.parametrize("count", [4, 32], ids=["small", "large"])
@pytest.mark.parametrize(
    ("datatype", "bad", "expected"),
    [
        ("INT32", True, "expected integers in [-2147483648, 2147483647]"),
        ("UINT8", 1.5, "expected integers in [0, 255]"),
        ("INT64", "7", "expected integers in"),
        ("FP32", "1.5", "expected numbers (int or float, not bool)"),
        ("FP64", True, "expected numbers (int or float, not bool)"),
        ("FP16", None, "expected numbers (int or float, not bool)"),
        ("BOOL", 1, "expected true or false"),
        ("BYTES", 1, "expected strings"),
        ("UINT64", False, "expected integers in [0, 18446744073709551615]"),
    ],
)
def test_a_value_of_the_wrong_kind_is_rejected(
    datatype: str, bad: Any, expected: str, count: int
) -> None:
    data = sample(datatype, count)
    data[count - 2] = bad
    message = decode_error(body(tensor(data, [count], datatype)))
    assert message.startswith(f"input 'x': value {bad!r} ({type(bad).__name__}) ")
    assert f"at flat index {count - 2} is not a valid {datatype} value" in message
    assert expected in message


@pytest.mark.parametrize("count", [4, 32], ids=["small", "large"])
@pytest.mark.parametrize(
    ("datatype", "bad"),
    [
        ("INT8", 128),
        ("INT8", -129),
        ("UINT8", 256),
        ("UINT8", -1),
        ("UINT16", 65536),
        ("INT32", 2**31),
        ("UINT32", -1),
        ("INT64", 2**63),
        ("UINT64", 2**64),
        ("UINT64", -1),
        ("FP16", 70000),
        ("FP16", -65520.0),
        ("FP32", 1e39),
        ("FP64", 10**400),
    ],
)
def test_an_out_of_range_value_is_rejected(datatype: str, bad: int | float, count: int) -> None:
    data = sample(datatype, count)
    data[1] = bad
    message = decode_error(body(tensor(data, [count], datatype)))
    assert f"at flat index 1 is out of range for {datatype}; expected " in message


def test_out_of_range_message_names_the_value_and_the_range() -> None:
    message = decode_error(body(tensor([1, 300], [2], "INT8")))
    assert message == (
        "input 'x': value 300 at flat index 1 is out of range for INT8; "
        "expected integers in [-128, 127]"
    )


def test_an_unknown_datatype_lists_the_known_ones() -> None:
    message = decode_error(body(tensor([1.0], [1], "fp32")))
    assert message == (
        "input 'x': unknown datatype 'fp32'; expected one of BOOL, UINT8, UINT16, UINT32, "
        "UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES"
    )


def test_a_negative_dimension_is_rejected() -> None:
    message = decode_error(body(tensor([1.0, 2.0], [2, -1])))
    assert message == (
        "input 'x': shape [2, -1] has a negative dimension -1; expected non-negative integers"
    )


@pytest.mark.parametrize("payload", [b"{", b'{"inputs": [', b"not json", b"", b'{"inputs": }'])
def test_malformed_json_is_a_protocol_error(payload: bytes) -> None:
    message = decode_error(payload)
    assert message.startswith("the body is not valid JSON: ")


@pytest.mark.parametrize("field", ["name", "shape", "datatype", "data"])
def test_a_missing_input_field_is_named(field: str) -> None:
    item = tensor([1.0], [1])
    del item[field]
    message = decode_error(body(item))
    assert message.startswith(
        f"invalid inference request: Object missing required field `{field}` - at `$.inputs[0]`"
    )
    assert 'expected {"inputs": [{"name": str' in message


def test_missing_inputs_is_named() -> None:
    message = decode_error(b'{"id": "1"}')
    assert "Object missing required field `inputs`" in message


def test_missing_fields_of_a_dict_body_are_named() -> None:
    message = decode_error({"inputs": [{"name": "x", "shape": [1], "data": [1]}]})
    assert "Object missing required field `datatype` - at `$.inputs[0]`" in message


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        (body(tensor([1.0], [1.0])), "Expected `int`, got `float` - at `$.inputs[0].shape[0]`"),
        (body(tensor([1.0], [True])), "Expected `int`, got `bool` - at `$.inputs[0].shape[0]`"),
        (body(tensor([1.0], [1]), id=7), "Expected `str | null`, got `int` - at `$.id`"),
        (body(tensor([1.0], 1)), "Expected `array`, got `int` - at `$.inputs[0].shape`"),
        (b'{"inputs": {}}', "Expected `array`, got `object` - at `$.inputs`"),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (body(tensor([1.0], [1]), outputs=[{}]), "missing required field `name`"),
    ],
)
def test_a_field_of_the_wrong_type_is_named(payload: bytes, where: str) -> None:
    message = decode_error(payload)
    assert message.startswith("invalid inference request: ")
    assert where in message


def test_a_request_without_inputs_is_rejected() -> None:
    message = decode_error(body())
    assert message == "the inference request has no inputs; expected at least one input tensor"


def test_duplicate_input_names_are_rejected() -> None:
    message = decode_error(body(tensor([1.0], [1]), tensor([2.0], [1], name="y"), tensor([3], [1])))
    assert message == "input 'x' appears more than once; expected unique input names"


def test_the_error_names_the_bad_input_among_several() -> None:
    message = decode_error(body(tensor([1.0], [1]), tensor([1, 2], [3], name="y")))
    assert message == "input 'y': shape [3] needs 3 values, got 2"


def test_protocol_errors_are_value_errors_and_chain_the_cause() -> None:
    with pytest.raises(ValueError, match="not valid JSON") as info:
        decode_request(b"{")
    assert isinstance(info.value.__cause__, msgspec.DecodeError)


# --------------------------------------------------------------------------- is_v2_request


def test_is_v2_request_accepts_oip_bodies() -> None:
    assert is_v2_request({"inputs": [tensor([1.0], [1])]})
    assert is_v2_request({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}], "id": "1"})


@pytest.mark.parametrize(
    "payload",
    [
        {"inputs": [[1, 2], [3, 4]]},
        {"inputs": [1, 2]},
        {"inputs": []},
        {"inputs": [{"name": "x", "shape": [1]}]},
        {"inputs": [tensor([1.0], [1]), [1, 2]]},
        {"inputs": {"x": [1]}},
        {"instances": [[1, 2]]},
        {},
        [tensor([1.0], [1])],
        "inputs",
        None,
        42,
    ],
)
def test_is_v2_request_rejects_other_shapes(payload: Any) -> None:
    assert not is_v2_request(payload)


# --------------------------------------------------------------------------- input helpers


def test_input_list_nests_flat_data_by_the_shape() -> None:
    item = decode_request(body(tensor(list(range(6)), [2, 3], "INT64"))).inputs[0]
    assert input_list(item) == [[0, 1, 2], [3, 4, 5]]
    item = decode_request(body(tensor(list(range(6)), [6], "INT64"))).inputs[0]
    assert input_list(item) == [0, 1, 2, 3, 4, 5]


def test_input_list_needs_no_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    item = decode_request(body(tensor([[1, 2], [3, 4]], [2, 2], "INT8"))).inputs[0]
    monkeypatch.setitem(sys.modules, "numpy", None)
    assert input_list(item) == [[1, 2], [3, 4]]


def test_input_array_without_numpy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    item = decode_request(body(tensor([1.0], [1]))).inputs[0]
    monkeypatch.setitem(sys.modules, "numpy", None)
    with pytest.raises(MissingDependencyError) as info:
        input_array(item)
    assert info.value.extra == "models"
    assert "servegraph[models]" in str(info.value)


def test_input_helpers_validate_hand_built_inputs() -> None:
    nested = RequestInput("x", [2, 2], "INT16", [[1, 2], [3, 4]])
    assert input_array(nested).tolist() == [[1, 2], [3, 4]]
    assert input_list(nested) == [[1, 2], [3, 4]]
    with pytest.raises(ProtocolError, match="needs 4 values, got 3"):
        input_array(RequestInput("x", [2, 2], "INT16", [1, 2, 3]))
    with pytest.raises(ProtocolError, match="unknown datatype 'F32'"):
        input_list(RequestInput("x", [1], "F32", [1.0]))


def test_bytes_inputs_become_object_arrays() -> None:
    item = decode_request(body(tensor([["a", "b"], ["c", "d"]], [2, 2], "BYTES"))).inputs[0]
    array = input_array(item)
    assert array.dtype == np.dtype(object)
    assert array.tolist() == [["a", "b"], ["c", "d"]]


# --------------------------------------------------------------------------- encode_output


@pytest.mark.parametrize("datatype", [name for name in ALL if name != "BYTES"])
def test_numpy_arrays_encode_with_their_datatype(datatype: str) -> None:
    array = np.arange(6).astype(DATATYPES[datatype]).reshape(2, 3)
    output = encode_output("y", array)
    assert output.name == "y"
    assert output.datatype == datatype
    assert output.shape == [2, 3]
    assert output.data == array.ravel().tolist()
    assert {type(value) for value in output.data} <= {bool, int, float}


@pytest.mark.parametrize(
    "array",
    [np.array([["a", "bc"]]), np.array([[b"a", b"bc"]]), np.array([["a", b"bc"]], dtype=object)],
    ids=["str", "bytes", "object"],
)
def test_text_arrays_encode_as_bytes_datatype(array: Any) -> None:
    output = encode_output("y", array)
    assert (output.datatype, output.shape, output.data) == ("BYTES", [1, 2], ["a", "bc"])


def test_numpy_data_is_flattened_row_major() -> None:
    transposed = np.arange(6, dtype=np.int32).reshape(2, 3).T
    output = encode_output("y", transposed)
    assert output.shape == [3, 2]
    assert output.data == [0, 3, 1, 4, 2, 5]


def test_numpy_scalars_and_zero_d_arrays_have_an_empty_shape() -> None:
    scalar = encode_output("y", np.float32(1.5))
    assert (scalar.shape, scalar.datatype, scalar.data) == ([], "FP32", [1.5])
    zero_d = encode_output("y", np.array(True))
    assert (zero_d.shape, zero_d.datatype, zero_d.data) == ([], "BOOL", [True])


def test_a_numpy_dtype_without_an_oip_datatype_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="output 'y': numpy dtype complex128 has no OIP"):
        encode_output("y", np.array([1 + 2j]))


@pytest.mark.parametrize(
    ("value", "shape", "datatype", "data"),
    [
        (True, [], "BOOL", [True]),
        (7, [], "INT64", [7]),
        (2.5, [], "FP64", [2.5]),
        ("hi", [], "BYTES", ["hi"]),
        (b"hi", [], "BYTES", ["hi"]),
        ([1, 2, 3], [3], "INT64", [1, 2, 3]),
        ([[1, 2], [3, 4.5]], [2, 2], "FP64", [1.0, 2.0, 3.0, 4.5]),
        (((1, 2), (3, 4)), [2, 2], "INT64", [1, 2, 3, 4]),
        ([(True,), (False,)], [2, 1], "BOOL", [True, False]),
        ([["a", b"b"]], [1, 2], "BYTES", ["a", "b"]),
        ([2**63, 1], [2], "UINT64", [2**63, 1]),
        ([-(2**63), 2**63 - 1], [2], "INT64", [-(2**63), 2**63 - 1]),
        ([], [0], "FP64", []),
        ([[], []], [2, 0], "FP64", []),
        ([np.float32(1.5), np.float32(2.0)], [2], "FP64", [1.5, 2.0]),
        ([np.int64(1), 2], [2], "INT64", [1, 2]),
    ],
)
def test_python_values_encode_with_an_inferred_datatype(
    value: Any, shape: list[int], datatype: str, data: list[Any]
) -> None:
    output = encode_output("y", value)
    assert (output.shape, output.datatype, output.data) == (shape, datatype, data)
    assert [type(item) for item in output.data] == [type(item) for item in data]


def test_enum_values_encode_as_their_plain_values() -> None:
    class Color(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    assert encode_output("y", [Color.RED]).data == ["red"]
    output = encode_output("y", [Level.HIGH, 1])
    assert (output.datatype, output.data, type(output.data[0])) == ("INT64", [3, 1], int)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([[1, 2], [3]], "output 'y': nested data is ragged or does not match shape [2, 2]"),
        ([[1], 2], "expected lists of 1 values at depth 1, got int 2"),
        ([1, [2]], "value [2] (list) has no OIP datatype (the data is ragged)"),
        ([True, 1], "output 'y': mixed value kinds (bool, int)"),
        (["a", 1.5], "mixed value kinds (float, str)"),
        ([None], "value None (NoneType) has no OIP datatype"),
        (None, "cannot encode a NoneType as a tensor"),
        ({"a": 1}, "cannot encode a dict as a tensor"),
        ([b"\xff"], "output 'y': bytes value b'\\xff' is not valid UTF-8"),
        ([2**64], "output 'y': integers beyond the INT64 and UINT64 ranges"),
        ([-1, 2**63], "integers beyond the INT64 and UINT64 ranges"),
        (np.array([1, None], dtype=object), "value None (NoneType) has no OIP datatype"),
    ],
)
def test_unencodable_outputs_are_protocol_errors(value: Any, expected: str) -> None:
    with pytest.raises(ProtocolError) as info:
        encode_output("y", value)
    assert expected in str(info.value)


# --------------------------------------------------------------------------- select_outputs


def outputs() -> list[ResponseOutput]:
    return [encode_output("a", 1), encode_output("b", 2.0), encode_output("c", "x")]


def test_select_outputs_keeps_everything_when_nothing_is_requested() -> None:
    assert select_outputs(outputs(), None) == outputs()
    assert select_outputs(outputs(), []) == outputs()


def test_select_outputs_keeps_the_requested_ones_in_request_order() -> None:
    selected = select_outputs(outputs(), [RequestOutput("c"), RequestOutput("a")])
    assert [output.name for output in selected] == ["c", "a"]


def test_select_outputs_names_an_unknown_output_and_the_available_ones() -> None:
    with pytest.raises(ProtocolError) as info:
        select_outputs(outputs(), [RequestOutput("a"), RequestOutput("z")])
    assert str(info.value) == (
        "requested output 'z' is not produced by the model; available outputs: 'a', 'b', 'c'"
    )


def test_select_outputs_from_no_outputs_says_none_are_available() -> None:
    with pytest.raises(ProtocolError, match="available outputs: none"):
        select_outputs([], [RequestOutput("z")])


# --------------------------------------------------------------------------- responses


def test_response_encoding_omits_unset_fields() -> None:
    response = InferResponse("iris", [encode_output("y", [1, 2])])
    assert json.loads(encode_response(response)) == {
        "model_name": "iris",
        "outputs": [{"name": "y", "shape": [2], "datatype": "INT64", "data": [1, 2]}],
    }


def test_response_encoding_keeps_id_version_and_parameters() -> None:
    output = ResponseOutput("y", [1], "FP32", [0.5], parameters={"content_type": "np"})
    response = InferResponse("iris", [output], model_version="2", id="req-1", parameters={"a": 1})
    expected = {
        "model_name": "iris",
        "model_version": "2",
        "id": "req-1",
        "parameters": {"a": 1},
        "outputs": [
            {
                "name": "y",
                "shape": [1],
                "datatype": "FP32",
                "data": [0.5],
                "parameters": {"content_type": "np"},
            }
        ],
    }
    assert json.loads(encode_response(response)) == expected
    assert response_dict(response) == expected


def test_response_dict_is_plain_builtins() -> None:
    result = response_dict(InferResponse("m", [encode_output("y", np.arange(3))], id="r"))
    assert result == {
        "model_name": "m",
        "id": "r",
        "outputs": [{"name": "y", "shape": [3], "datatype": "INT64", "data": [0, 1, 2]}],
    }
    assert type(result["outputs"][0]) is dict


def test_numpy_data_in_a_hand_built_output_is_encoded() -> None:
    output = ResponseOutput("y", [2], "FP32", np.array([0.5, 1.5], dtype=np.float32))
    response = InferResponse("m", [output])
    assert json.loads(encode_response(response))["outputs"][0]["data"] == [0.5, 1.5]
    assert response_dict(response)["outputs"][0]["data"] == [0.5, 1.5]


def test_a_response_holding_unencodable_values_is_a_protocol_error() -> None:
    response = InferResponse("m", [ResponseOutput("y", [1], "BYTES", [object()])])
    with pytest.raises(ProtocolError, match="the response of model 'm' cannot be encoded"):
        encode_response(response)
    with pytest.raises(ProtocolError, match="cannot encode a object as JSON"):
        response_dict(response)


def test_a_request_round_trips_through_msgspec() -> None:
    request = decode_request(body(tensor([[1, 2]], [1, 2], "INT8"), id="r"))
    assert json.loads(msgspec.json.encode(request)) == {
        "inputs": [{"name": "x", "shape": [1, 2], "datatype": "INT8", "data": [1, 2]}],
        "id": "r",
    }


# --------------------------------------------------------------------------- other bodies


def test_error_body() -> None:
    assert error_body("model 'm' is not ready") == {"error": "model 'm' is not ready"}


def test_server_metadata() -> None:
    assert server_metadata("servegraph", "0.1.0", ["binary_data"]) == {
        "name": "servegraph",
        "version": "0.1.0",
        "extensions": ["binary_data"],
    }


def test_model_metadata_keeps_variable_dimensions_and_drops_extra_keys() -> None:
    meta = model_metadata(
        "iris",
        ["1", "2"],
        "sklearn",
        [{"name": "x", "datatype": "FP32", "shape": (-1, 4), "doc": "features"}],
        [{"name": "y", "datatype": "INT64", "shape": [-1]}],
    )
    assert meta == {
        "name": "iris",
        "versions": ["1", "2"],
        "platform": "sklearn",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": [-1]}],
    }


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "x", "datatype": "FP32"},
        {"name": "x", "datatype": "float32", "shape": [1]},
        {"name": "x", "datatype": "FP32", "shape": [-2]},
        {"name": "x", "datatype": "FP32", "shape": [1.0]},
        {"name": "x", "datatype": "FP32", "shape": "1"},
        {"name": 1, "datatype": "FP32", "shape": [1]},
        ["x", "FP32", [1]],
    ],
)
def test_model_metadata_rejects_bad_tensor_metadata(entry: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        model_metadata("iris", [], "sklearn", [], [entry])
    message = str(info.value)
    assert message.startswith("model 'iris' outputs: bad tensor metadata ")
    assert '"datatype": one of BOOL, UINT8' in message
    assert "-1 for a variable dimension" in message


def test_docstring_examples_run() -> None:
    result = doctest.testmod(v2, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_request_struct_equality_ignores_data_layout() -> None:
    flat = decode_request(body(tensor([1, 2, 3, 4], [2, 2], "INT32")))
    nested = decode_request(body(tensor([[1, 2], [3, 4]], [2, 2], "INT32")))
    assert flat == nested == InferRequest([RequestInput("x", [2, 2], "INT32", [1, 2, 3, 4])])
