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
