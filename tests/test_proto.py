"""The protobuf schema: generated code is current, the wire contract matches Caffe 1.0 +
Ristretto, every shipped prototxt parses, and the "original schema" view strips exactly
our extensions."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, text_format

from conftest import REPO, SHARED, shared_path
from ristretto_cli.caffe import original_schema
from ristretto_cli.errors import RistrettoError
from ristretto_cli.proto import caffe_pb2

PROTO_DIR = REPO / "proto"
PINNED_GRPC_TOOLS = "1.85.1"  # setup.cfg [options.extras_require] test


def _protoc(tmp_path: Path, *args: str) -> None:
    pytest.importorskip("grpc_tools")
    cmd = [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", *args, str(PROTO_DIR / "caffe.proto")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def _embedded_descriptor(module_source: str) -> descriptor_pb2.FileDescriptorProto:
    """The FileDescriptorProto that generated code registers (its AddSerializedFile literal)."""
    tree = ast.parse(module_source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return descriptor_pb2.FileDescriptorProto.FromString(ast.literal_eval(node.args[0]))
    raise AssertionError("no AddSerializedFile call in generated code")


def test_generated_descriptor_matches_schema(tmp_path):
    """caffe_pb2.py describes exactly what caffe.proto says (else: run `make proto`), whatever
    protoc version is installed."""
    _protoc(tmp_path, f"--python_out={tmp_path}")
    fresh = _embedded_descriptor((tmp_path / "caffe_pb2.py").read_text())
    committed = _embedded_descriptor((PROTO_DIR / "caffe_pb2.py").read_text())
    assert committed == fresh, "proto/caffe_pb2.py is stale: run `make proto` and commit it"


def test_generated_module_is_byte_identical(tmp_path):
    """With the pinned protoc, `make proto` output is exactly the committed file."""
    pytest.importorskip("grpc_tools")
    version = importlib.metadata.version("grpcio-tools")
    if version != PINNED_GRPC_TOOLS:
        pytest.skip(f"grpcio-tools {version} installed, the committed code comes from {PINNED_GRPC_TOOLS}")
    _protoc(tmp_path, f"--python_out={tmp_path}")
    fresh = (tmp_path / "caffe_pb2.py").read_text()
    committed = (PROTO_DIR / "caffe_pb2.py").read_text()
    assert committed == fresh, "proto/caffe_pb2.py is stale: run `make proto` and commit it"


# -- the wire contract -----------------------------------------------------------------
# (message, field, number, default or None) taken from Caffe 1.0's / Caffe-Ristretto's
# caffe.proto; a wrong number or default silently misreads files, so pin the ones our
# code relies on and a sample of the rest.
CONTRACT = [
    ("BlobShape", "dim", 1, None),
    ("BlobProto", "shape", 7, None), ("BlobProto", "data", 5, None), ("BlobProto", "diff", 6, None),
    ("BlobProto", "double_data", 8, None), ("BlobProto", "double_diff", 9, None),
    ("BlobProto", "num", 1, 0), ("BlobProto", "width", 4, 0),
    ("Datum", "data", 4, None), ("Datum", "label", 5, None), ("Datum", "float_data", 6, None),
    ("Datum", "encoded", 7, False),
    ("FillerParameter", "type", 1, "constant"), ("FillerParameter", "max", 4, 1.0),
    ("FillerParameter", "std", 6, 1.0), ("FillerParameter", "sparse", 7, -1),
    ("FillerParameter", "variance_norm", 8, 0),
    ("NetParameter", "layer", 100, None), ("NetParameter", "layers", 2, None), ("NetParameter", "input", 3, None),
    ("NetParameter", "input_shape", 8, None), ("NetParameter", "input_dim", 4, None),
    ("NetParameter", "state", 6, None),
    ("SolverParameter", "net", 24, None), ("SolverParameter", "test_initialization", 32, True),
    ("SolverParameter", "average_loss", 33, 1), ("SolverParameter", "iter_size", 36, 1),
    ("SolverParameter", "regularization_type", 29, "L2"), ("SolverParameter", "clip_gradients", 35, -1.0),
    ("SolverParameter", "snapshot_format", 37, 1), ("SolverParameter", "solver_mode", 17, 1),
    ("SolverParameter", "random_seed", 20, -1), ("SolverParameter", "type", 40, "SGD"),
    ("SolverParameter", "delta", 31, 1e-8), ("SolverParameter", "momentum2", 39, 0.999),
    ("SolverParameter", "rms_decay", 38, 0.99), ("SolverParameter", "solver_type", 30, 0),
    ("SolverParameter", "layer_wise_reduce", 41, True), ("SolverParameter", "snapshot_after_train", 28, True),
    ("SolverState", "history", 3, None), ("SolverState", "current_step", 4, 0),
    ("NetState", "phase", 1, 1), ("NetStateRule", "not_stage", 5, None),
    ("ParamSpec", "share_mode", 2, None), ("ParamSpec", "lr_mult", 3, 1.0), ("ParamSpec", "decay_mult", 4, 1.0),
    ("LayerParameter", "phase", 10, None), ("LayerParameter", "propagate_down", 11, None),
    ("LayerParameter", "transform_param", 100, None), ("LayerParameter", "loss_param", 101, None),
    ("LayerParameter", "convolution_param", 106, None), ("LayerParameter", "inner_product_param", 117, None),
    ("LayerParameter", "batch_norm_param", 139, None), ("LayerParameter", "input_param", 143, None),
    ("LayerParameter", "recurrent_param", 146, None), ("LayerParameter", "quantization_param", 149, None),
    ("QuantizationParameter", "precision", 1, 0), ("QuantizationParameter", "rounding_scheme", 2, 0),
    ("QuantizationParameter", "bw_layer_in", 3, 32), ("QuantizationParameter", "bw_layer_out", 4, 32),
    ("QuantizationParameter", "bw_params", 5, 32), ("QuantizationParameter", "fl_layer_in", 6, 16),
    ("QuantizationParameter", "fl_layer_out", 7, 16), ("QuantizationParameter", "fl_params", 8, 16),
    ("QuantizationParameter", "mant_bits", 9, 23), ("QuantizationParameter", "exp_bits", 10, 8),
    ("QuantizationParameter", "exp_min", 11, -8), ("QuantizationParameter", "exp_max", 12, -1),
    ("QuantizationParameter", "saturate_after_rounding", 1001, False),
    ("TransformationParameter", "scale", 1, 1.0), ("TransformationParameter", "mean_value", 5, None),
    ("LossParameter", "normalization", 3, 1), ("LossParameter", "normalize", 2, None),
    ("ConvolutionParameter", "stride", 6, None), ("ConvolutionParameter", "dilation", 18, None),
    ("ConvolutionParameter", "group", 5, 1), ("ConvolutionParameter", "axis", 16, 1),
    ("ConvolutionParameter", "force_nd_im2col", 17, False),
    ("PoolingParameter", "pad", 4, 0), ("PoolingParameter", "stride", 3, 1),
    ("PoolingParameter", "global_pooling", 12, False),
    ("LRNParameter", "local_size", 1, 5), ("LRNParameter", "beta", 3, 0.75), ("LRNParameter", "k", 5, 1.0),
    ("BatchNormParameter", "moving_average_fraction", 2, 0.999), ("BatchNormParameter", "eps", 3, 1e-5),
    ("DataParameter", "backend", 8, 0), ("DataParameter", "prefetch", 10, 4),
    ("ImageDataParameter", "batch_size", 4, 1), ("ImageDataParameter", "is_color", 11, True),
    ("WindowDataParameter", "crop_mode", 11, "warp"), ("WindowDataParameter", "fg_fraction", 9, 0.25),
    ("MVNParameter", "eps", 3, 1e-9), ("ExpParameter", "base", 1, -1.0), ("ReshapeParameter", "num_axes", 3, -1),
    ("CropParameter", "axis", 1, 2), ("FlattenParameter", "end_axis", 2, -1),
    ("EltwiseParameter", "operation", 1, 1), ("EltwiseParameter", "stable_prod_grad", 3, True),
    ("HingeLossParameter", "norm", 1, 1), ("ReductionParameter", "operation", 1, 1),
    ("V1LayerParameter", "layer", 1, None), ("V1LayerParameter", "param", 1001, None),
    ("V1LayerParameter", "blob_share_mode", 1002, None), ("V1LayerParameter", "blobs_lr", 7, None),
    ("V1LayerParameter", "weight_decay", 8, None), ("V1LayerParameter", "include", 32, None),
    ("V1LayerParameter", "transform_param", 36, None), ("V1LayerParameter", "loss_param", 42, None),
    ("V0LayerParameter", "kernelsize", 8, None), ("V0LayerParameter", "blobs", 50, None),
    ("V0LayerParameter", "det_crop_mode", 59, "warp"), ("V0LayerParameter", "concat_dim", 65, 1),
    ("V0LayerParameter", "hdf5_output_param", 1001, None),
]


@pytest.mark.parametrize("message,field,number,default", CONTRACT)
def test_wire_contract(message, field, number, default):
    f = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field]
    assert f.number == number
    if default is not None:
        assert f.default_value == pytest.approx(default) if isinstance(default, float) else f.default_value == default


def test_packed_fields():
    assert caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name["data"].GetOptions().packed
    assert caffe_pb2.BlobShape.DESCRIPTOR.fields_by_name["dim"].GetOptions().packed
    assert not caffe_pb2.Datum.DESCRIPTOR.fields_by_name["float_data"].GetOptions().packed


def test_v1_layer_type_enum_values():
    v1 = caffe_pb2.V1LayerParameter
    expected = {"NONE": 0, "ACCURACY": 1, "BNLL": 2, "CONCAT": 3, "CONVOLUTION": 4, "DATA": 5, "DROPOUT": 6,
                "EUCLIDEAN_LOSS": 7, "FLATTEN": 8, "HDF5_DATA": 9, "HDF5_OUTPUT": 10, "IM2COL": 11,
                "IMAGE_DATA": 12, "INFOGAIN_LOSS": 13, "INNER_PRODUCT": 14, "LRN": 15,
                "MULTINOMIAL_LOGISTIC_LOSS": 16, "POOLING": 17, "RELU": 18, "SIGMOID": 19, "SOFTMAX": 20,
                "SOFTMAX_LOSS": 21, "SPLIT": 22, "TANH": 23, "WINDOW_DATA": 24, "ELTWISE": 25, "POWER": 26,
                "SIGMOID_CROSS_ENTROPY_LOSS": 27, "HINGE_LOSS": 28, "MEMORY_DATA": 29, "ARGMAX": 30,
                "THRESHOLD": 31, "DUMMY_DATA": 32, "SLICE": 33, "MVN": 34, "ABSVAL": 35, "SILENCE": 36,
                "CONTRASTIVE_LOSS": 37, "EXP": 38, "DECONVOLUTION": 39}
    assert {v.name: v.number for v in v1.LayerType.DESCRIPTOR.values} == expected


def test_enums_of_quantization_parameter():
    q = caffe_pb2.QuantizationParameter
    assert {v.name: v.number for v in q.Precision.DESCRIPTOR.values} == {
        "DYNAMIC_FIXED_POINT": 0, "MINIFLOAT": 1, "INTEGER_POWER_OF_2_WEIGHTS": 2}
    assert {v.name: v.number for v in q.Rounding.DESCRIPTOR.values} == {
        "NEAREST": 0, "STOCHASTIC": 1, "NEAREST_TIES_AWAY": 2, "NEAREST_TIES_UP": 3, "TRUNCATE": 4,
        "TOWARD_ZERO": 5}


def test_every_layer_param_of_v1_exists_in_v2():
    v2 = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for f in caffe_pb2.V1LayerParameter.DESCRIPTOR.fields:
        if f.name.endswith("_param") and f.message_type is not None:
            assert v2[f.name].message_type is f.message_type


def test_ristretto_extensions_use_high_numbers_and_are_tagged():
    decls = original_schema.extension_declarations()
    assert sorted(decls) == sorted([
        ("enum_value", "QuantizationParameter.Rounding", "NEAREST_TIES_AWAY", 2),
        ("enum_value", "QuantizationParameter.Rounding", "NEAREST_TIES_UP", 3),
        ("enum_value", "QuantizationParameter.Rounding", "TRUNCATE", 4),
        ("enum_value", "QuantizationParameter.Rounding", "TOWARD_ZERO", 5),
        ("field", "QuantizationParameter", "saturate_after_rounding", 1001),
        ("field", "QuantizationParameter", "is_unsigned_layer_in", 1002),
        ("field", "QuantizationParameter", "is_unsigned_layer_out", 1003),
        ("field", "QuantizationParameter", "bw_bias", 1004),
        ("field", "QuantizationParameter", "fl_bias", 1005),
        ("field", "QuantizationParameter", "accum_bits", 1006),
        ("field", "QuantizationParameter", "accum_overflow", 1007),
    ])
    for kind, _, _, number in decls:
        if kind == "field":
            assert number >= 1000


# -- every shipped prototxt parses -----------------------------------------------------

def _is_solver(path: Path, text: str) -> bool:
    if "solver" in path.name:
        return True
    return re.search(r"^\s*(base_lr|lr_policy|max_iter|train_net|test_iter)\s*:", text, re.M) is not None


def _shared_prototxts():
    files = []
    for pattern in ("zoo/**/*.prototxt", "golden/*/net.prototxt", "data/caffemodels/**/*.prototxt"):
        files.extend(sorted(SHARED.glob(pattern)))
    return files


@pytest.mark.parametrize("path", _shared_prototxts() or [None],
                         ids=lambda p: str(p.relative_to(SHARED)) if p else "no-shared")
def test_shared_prototxt_parses(path):
    if path is None:
        shared_path("zoo")  # skips when ../shared is absent
        pytest.skip("no prototxt files under ../shared")
    text = path.read_text()
    message = caffe_pb2.SolverParameter() if _is_solver(path, text) else caffe_pb2.NetParameter()
    text_format.Parse(text, message)
    if isinstance(message, caffe_pb2.NetParameter):
        assert len(message.layer) + len(message.layers) > 0
    else:
        assert message.HasField("base_lr")


def test_unknown_field_is_rejected():
    with pytest.raises(text_format.ParseError):
        text_format.Parse('layer { name: "a" no_such_field: 1 }', caffe_pb2.NetParameter())


# -- the original schema ---------------------------------------------------------------

QUANTIZED = """
name: "q"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer {
  name: "conv1" type: "ConvolutionRistretto" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 }
  quantization_param {
    precision: MINIFLOAT rounding_scheme: STOCHASTIC mant_bits: 3 exp_bits: 4
    bw_layer_in: 8 fl_layer_in: 4 bw_params: 8 fl_params: 6 bw_layer_out: 8 fl_layer_out: 2
    exp_min: -6 exp_max: 0
  }
}
"""


def test_original_schema_accepts_original_fields():
    msg = original_schema.parse_with_original_schema(QUANTIZED, filename="q.prototxt")
    assert msg.layer[1].quantization_param.mant_bits == 3
    # same content as with our schema
    ours = text_format.Parse(QUANTIZED, caffe_pb2.NetParameter())
    assert msg.SerializeToString() == ours.SerializeToString()


@pytest.mark.parametrize("extra", ["rounding_scheme: NEAREST_TIES_AWAY", "rounding_scheme: TRUNCATE",
                                   "rounding_scheme: TOWARD_ZERO", "rounding_scheme: NEAREST_TIES_UP",
                                   "rounding_scheme: STOCHASTIC saturate_after_rounding: false"])
def test_original_schema_rejects_extensions(extra):
    ours = QUANTIZED.replace("rounding_scheme: STOCHASTIC", extra)
    text_format.Parse(ours, caffe_pb2.NetParameter())  # fine for us
    with pytest.raises(RistrettoError, match=r"^q\.prototxt:\d+:\d+: not readable by the original"):
        original_schema.parse_with_original_schema(ours, filename="q.prototxt")


def test_original_schema_checks_binary():
    net = text_format.Parse(QUANTIZED, caffe_pb2.NetParameter())
    original_schema.parse_binary_with_original_schema(net.SerializeToString())
    net.layer[1].quantization_param.rounding_scheme = caffe_pb2.QuantizationParameter.TRUNCATE
    with pytest.raises(RistrettoError, match="quantization_param#2"):
        original_schema.parse_binary_with_original_schema(net.SerializeToString(), filename="m.caffemodel")
    net.layer[1].quantization_param.rounding_scheme = caffe_pb2.QuantizationParameter.NEAREST
    net.layer[1].quantization_param.saturate_after_rounding = True
    with pytest.raises(RistrettoError, match="#1001"):
        original_schema.parse_binary_with_original_schema(net.SerializeToString(), filename="m.caffemodel")


def test_original_schema_keeps_everything_else():
    ours = descriptor_pb2.FileDescriptorProto()
    caffe_pb2.DESCRIPTOR.CopyToProto(ours)
    orig = original_schema.original_pool().FindFileByName("caffe_original.proto")
    assert sorted(orig.message_types_by_name) == sorted(ours_m.name for ours_m in ours.message_type)
    q = orig.message_types_by_name["QuantizationParameter"]
    assert [f.name for f in q.fields] == [f.name for f in caffe_pb2.QuantizationParameter.DESCRIPTOR.fields
                                          if f.number < 1000]
    assert [v.name for v in q.enum_types_by_name["Rounding"].values] == ["NEAREST", "STOCHASTIC"]


def test_golden_nets_are_original_compatible():
    for path in sorted(shared_path("golden").glob("*/net.prototxt")):
        original_schema.parse_with_original_schema(path.read_text(), filename=str(path))
