"""Files of other Caffe generations (issue #8): nets that mix V1 and V2 layers, the 2016
Ristretto release's enum and trimming-mode names, LevelDB sources, BVLC master's last
schema fields (round_mode, clip_param, swish_param, the solver's ``weights``)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import run_cli
from ristretto_cli.caffe.prototxt import message_to_text, parse_net_text, parse_solver_text
from ristretto_cli.errors import RistrettoError
from ristretto_cli.proto import caffe_pb2

MIXED = '''name: "mixed"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 4 input_dim: 4
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
         convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }
'''


def _one_line_error(code, err, *parts):
    err = err.strip()
    assert code == 2, err
    assert "\n" not in err and "Traceback" not in err, err
    for p in parts:
        assert p in err, f"{p!r} not in {err!r}"


# -- 1. V1 `layers` and V2 `layer` in one net -------------------------------------------

def test_a_net_with_v1_and_v2_layers_is_refused():
    with pytest.raises(RistrettoError) as e:
        parse_net_text(MIXED, "mixed.prototxt")
    msg = str(e.value)
    assert msg.startswith("mixed.prototxt: ") and "both 'layer' and deprecated 'layers'" in msg
    assert 'layer { type: "Convolution"' in msg  # says which form to write


def test_a_net_with_v1_and_v2_layers_is_one_line_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "mixed.prototxt"
    path.write_text(MIXED)
    code, _, err = run_cli(["info", "-m", path], capsys)
    _one_line_error(code, err, str(path), "'layers'", "string types")


def test_v1_only_and_v2_only_nets_still_read():
    v1 = parse_net_text(MIXED.replace('layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }', ""))
    assert [l.type for l in v1.layer] == ["Input", "Convolution"]
    v2 = parse_net_text(MIXED.replace('layers { name: "conv" type: CONVOLUTION', 'layer { name: "conv" type: "Convolution"'))
    assert [l.type for l in v2.layer] == ["Input", "Convolution", "Softmax"]


# -- 3. the 2016 Ristretto release's names ------------------------------------------------

OLD_RISTRETTO = '''name: "old"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 1 dim: 4 dim: 4 }} }} }}
layer {{ name: "conv" type: "ConvolutionRistretto" bottom: "data" top: "conv"
        convolution_param {{ num_output: 2 kernel_size: 3 }}
        quantization_param {{ precision: {p} bw_layer_out: 8 bw_params: 4 fl_layer_out: 2 fl_params: 3 }} }}
'''


@pytest.mark.parametrize("old, new", [("FIXED_POINT", "DYNAMIC_FIXED_POINT"), ("MINI_FLOATING_POINT", "MINIFLOAT"),
                                      ("POWER_2_WEIGHTS", "INTEGER_POWER_OF_2_WEIGHTS")])
def test_2016_precision_names_read_as_todays(old, new):
    net = parse_net_text(OLD_RISTRETTO.format(p=old))
    q = net.layer[1].quantization_param
    assert q.precision == caffe_pb2.QuantizationParameter.Precision.Value(new)
    assert q.bw_params == 4 and q.fl_layer_out == 2
    text = message_to_text(net)  # what we write uses today's name only
    assert f"precision: {new}" in text
    if old != "FIXED_POINT":
        assert old not in text
    else:
        assert "precision: FIXED_POINT" not in text


def test_todays_precision_names_and_other_enums_are_untouched():
    net = parse_net_text(OLD_RISTRETTO.format(p="MINIFLOAT").replace("bw_params: 4", "bw_params: 4 rounding_scheme: STOCHASTIC"))
    q = net.layer[1].quantization_param
    assert q.precision == caffe_pb2.QuantizationParameter.MINIFLOAT and q.rounding_scheme == 1


def test_errors_after_an_old_name_keep_their_column():
    # "bogus" starts at column 28 of line 2 as written (the rename makes the line longer)
    text = 'layer { name: "a" type: "Input" top: "a" }\nlayer { quantization_param { precision: FIXED_POINT bogus: 1 } }\n'
    col = text.splitlines()[1].index("bogus") + 1
    with pytest.raises(RistrettoError, match=rf"^f\.prototxt:2:{col}: .*bogus"):
        parse_net_text(text, "f.prototxt")


@pytest.mark.parametrize("old, new", [("fixed_point", "dynamic_fixed_point"), ("mini_floating_point", "minifloat"),
                                      ("power_of_2_weights", "integer_power_of_2_weights"),
                                      ("minifloat", "minifloat")])
def test_2016_trimming_mode_spellings(tmp_path, monkeypatch, old, new):
    from ristretto_cli.quantize import procedure

    seen = {}

    def fake_quantize(model, weights, out, mode, *args, **kwargs):
        seen["mode"] = mode
        raise RistrettoError("stopped before the search")

    monkeypatch.setattr(procedure, "quantize", fake_quantize)
    model, weights = tmp_path / "m.prototxt", tmp_path / "w.caffemodel"
    model.write_text("")
    weights.write_bytes(b"")
    code = run_cli(["quantize", f"--model={model}", f"--weights={weights}",
                    f"--model_quantized={tmp_path / 'q.prototxt'}", f"--trimming_mode={old}"])
    assert code == 2 and seen["mode"] == new


# -- 4. LevelDB sources ------------------------------------------------------------------

LEVELDB_NET = '''name: "ldb"
layer {{ name: "mnist" type: "Data" top: "data" top: "label"
        data_param {{ source: "{source}" batch_size: 2{backend} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 3 }} }}
'''


@pytest.mark.parametrize("declared", [True, False], ids=["backend-LEVELDB", "leveldb-folder-as-LMDB"])
def test_leveldb_is_refused_in_one_line_that_says_how_to_convert(tmp_path, capsys, declared):
    db = tmp_path / "mnist_train_leveldb"
    if not declared:  # what a LevelDB folder holds
        db.mkdir()
        (db / "CURRENT").write_text("MANIFEST-000001\n")
        (db / "MANIFEST-000001").write_bytes(b"")
    net = tmp_path / "ldb.prototxt"
    net.write_text(LEVELDB_NET.format(source=db, backend=" backend: LEVELDB" if declared else ""))
    for command in (["info", "-m", net], ["benchmark", "-m", net, "-i", "1"]):
        code, _, err = run_cli(command, capsys)
        _one_line_error(code, err, str(net), "layer 'mnist'", str(db), "LevelDB", "--backend=lmdb",
                        "convert_imageset", "ristretto convert")


# -- 2. BVLC master's last schema fields -----------------------------------------------------

@pytest.mark.parametrize("message, field, number, default", [
    ("PoolingParameter", "round_mode", 13, 0), ("LayerParameter", "swish_param", 147, None),
    ("LayerParameter", "clip_param", 148, None), ("SolverParameter", "weights", 42, None),
    ("ClipParameter", "min", 1, None), ("ClipParameter", "max", 2, None), ("SwishParameter", "beta", 1, 1.0),
])
def test_fields_of_the_final_schema(message, field, number, default):
    f = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field]
    assert f.number == number
    if default is not None:
        assert f.default_value == default
    assert caffe_pb2.PoolingParameter.RoundMode.Value("FLOOR") == 1


def test_final_schema_fields_are_the_originals_not_ours():
    """They are in Caffe-Ristretto's own final caffe.proto: a prototxt using them passes the
    original-schema check."""
    from ristretto_cli.caffe.original_schema import parse_with_original_schema

    text = '''layer { name: "p" type: "Pooling" pooling_param { pool: MAX kernel_size: 2 round_mode: FLOOR } }
layer { name: "c" type: "Clip" clip_param { min: 0 max: 6 } }
layer { name: "s" type: "Swish" swish_param { beta: 2 } }
'''
    parse_with_original_schema(text)
    parse_with_original_schema('weights: "a.caffemodel" base_lr: 0.1', "SolverParameter")


def test_clip_and_swish_params_in_a_caffemodel_stay_theirs(tmp_path):
    from ristretto_cli.caffe.caffemodel import read_caffemodel, write_caffemodel

    net = caffe_pb2.NetParameter()
    clip = net.layer.add(name="c", type="Clip")
    clip.clip_param.min, clip.clip_param.max = -1.0, 6.0
    net.layer.add(name="s", type="Swish").swish_param.beta = 2.0
    write_caffemodel(tmp_path / "m.caffemodel", net)
    back = read_caffemodel(tmp_path / "m.caffemodel")
    assert back.layer[0].clip_param.max == 6.0 and not back.layer[0].HasField("quantization_param")
    assert back.layer[1].swish_param.beta == 2.0 and not back.layer[1].HasField("quantization_param")
