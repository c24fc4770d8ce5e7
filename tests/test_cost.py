"""The cost model (ristretto_cli.cost) and `ristretto cost`: LeNet counted by hand, a
quantized LeNet with known widths, the energy table and its YAML overrides."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from ristretto_cli.cost import EnergyTable, load_energy_table, net_cost
from ristretto_cli.errors import RistrettoError

# LeNet as deployed (Caffe's examples/mnist/lenet.prototxt), one image per pass
LENET = """
name: "LeNet"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape: {{ dim: {batch} dim: 1 dim: 28 dim: 28 }} }} }}
layer {{ name: "conv1" type: "{conv1}" bottom: "data" top: "conv1" {q_conv1}
        convolution_param {{ num_output: 20 kernel_size: 5 stride: 1 }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2" type: "{conv2}" bottom: "pool1" top: "conv2" {q_conv2}
        convolution_param {{ num_output: 50 kernel_size: 5 stride: 1 }} }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "{ip1}" bottom: "pool2" top: "ip1" {q_ip1} inner_product_param {{ num_output: 500 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param {{ num_output: 10 }} }}
layer {{ name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }}
"""
FLOAT = dict(conv1="Convolution", conv2="Convolution", ip1="InnerProduct", q_conv1="", q_conv2="", q_ip1="")
# conv1: fixed point in 8 / weights 4 / out 8; conv2: minifloat e3 m4 (8 bits);
# ip1: power-of-two weights 2^[-8,-1] with 8-bit activations; ip2 stays float
QUANTIZED = dict(
    conv1="ConvolutionRistretto", conv2="ConvolutionRistretto", ip1="FcRistretto",
    q_conv1="quantization_param { bw_layer_in: 8 fl_layer_in: 8 bw_params: 4 fl_params: 4 "
            "bw_layer_out: 8 fl_layer_out: 5 }",
    q_conv2="quantization_param { precision: MINIFLOAT mant_bits: 4 exp_bits: 3 }",
    q_ip1="quantization_param { precision: INTEGER_POWER_OF_2_WEIGHTS exp_min: -8 exp_max: -1 "
          "bw_layer_in: 8 fl_layer_in: 4 bw_layer_out: 8 fl_layer_out: 4 }")

# MACs of one image, counted by hand: outputs x weights feeding each output
HAND_MACS = {
    "conv1": 20 * 24 * 24 * (1 * 5 * 5),     # 288,000
    "conv2": 50 * 8 * 8 * (20 * 5 * 5),      # 1,600,000
    "ip1": 500 * (50 * 4 * 4),               # 400,000
    "ip2": 10 * 500,                         # 5,000
}


def _write(tmp_path, name, batch=1, **kw):
    p = tmp_path / name
    p.write_text(LENET.format(batch=batch, **kw))
    return p


def _cost(path, energy=None):
    from ristretto_cli.net import load_net

    net = load_net(str(path))
    return net_cost(net, energy=energy)


def test_lenet_macs_are_the_hand_count_and_what_info_shows(tmp_path, capsys):
    assert sum(HAND_MACS.values()) == 2_293_000
    model = _write(tmp_path, "lenet.prototxt", batch=64, **FLOAT)
    cost = _cost(model)
    assert {l.name: l.macs for l in cost.layers if l.macs} == {k: 64 * v for k, v in HAND_MACS.items()}
    assert cost.macs == 64 * 2_293_000 == 146_752_000 and cost.batch == 64
    status, out, err = run_cli(["info", "--model", model], capsys)
    assert status == 0, err
    assert "146752000" in out and "2,293,000 MACs per image" in out
    # float: 32 x 32 bit operations per MAC, 32-bit weights
    assert cost.bitops == 1024 * cost.macs
    assert cost.weight_bits == 32 * (520 + 25_050 + 400_500 + 5_010)


def test_quantized_lenet_bitops_weight_and_activation_bits(tmp_path):
    cost = _cost(_write(tmp_path, "q.prototxt", **QUANTIZED))
    by = {l.name: l for l in cost.layers}
    # bit operations per MAC: fixed 8 x 4; minifloat (m+1)^2 + e = 25 + 3; power of two: 8 (shift + add); float 32 x 32
    assert by["conv1"].bitops == 288_000 * 8 * 4 == 9_216_000
    assert by["conv2"].bitops == 1_600_000 * 28 == 44_800_000
    assert by["ip1"].bitops == 400_000 * 8 == 3_200_000
    assert by["ip2"].bitops == 5_000 * 1024 == 5_120_000
    assert cost.bitops == 62_336_000
    # weights and bias in the weights' format; power-of-two: 4-bit codes (sign + 3 exponent bits), bias float
    assert by["conv1"].weight_bits == (500 + 20) * 4 == 2_080
    assert by["conv2"].weight_bits == (25_000 + 50) * 8 == 200_400
    assert by["ip1"].weight_bits == 400_000 * 4 + 500 * 32 == 1_616_000
    assert by["ip2"].weight_bits == 5_010 * 32 == 160_320
    assert cost.weight_bits == 1_978_800
    # accumulators: exact fixed point bw_in + bw_w + ceil(log2 fan-in); float32 for minifloat and float
    assert by["conv1"].accumulator_bits == 8 + 4 + 5          # fan-in 25
    assert by["ip1"].accumulator_bits == 8 + 7 + 10           # 2^-8..2^-1, fan-in 800
    assert by["conv2"].accumulator_bits == by["ip2"].accumulator_bits == 32
    # activations: a blob in its writer's output format; peak while pool1 reads conv1
    assert by["conv1"].activation_bits == 11_520 * 8 and by["pool1"].activation_bits == 2_880 * 32
    assert by["conv2"].activation_bits == 3_200 * 8 and by["relu1"].activation_bits == 0   # in place
    assert cost.peak_activation_bits == 11_520 * 8 + 2_880 * 32 == 184_320
    assert cost.peak_layer == "pool1" and cost.peak_blobs == ["conv1", "pool1"]


def test_energy_of_the_quantized_lenet_from_the_default_table(tmp_path):
    cost = _cost(_write(tmp_path, "q.prototxt", **QUANTIZED))
    by = {l.name: l for l in cost.layers}
    # conv1: 8 x 4 multiply = 0.2 pJ * 32/64; 17-bit add = 0.03 + 9/24 * 0.07 pJ
    assert by["conv1"].compute_pj == pytest.approx(288_000 * (0.1 + 0.05625))
    assert by["ip2"].compute_pj == pytest.approx(5_000 * (3.7 + 0.9))          # float32 multiply + add
    assert by["ip1"].compute_pj == pytest.approx(400_000 * (0.03 + 17 / 24 * 0.07))   # adds only (25 bits)
    assert by["conv2"].compute_pj == pytest.approx(1_600_000 * (1.1 * 64 / 256 + 0.9))   # 8x8 float mult
    assert cost.energy_pj("weights") == pytest.approx(1_978_800 * 1950 / 64)
    assert cost.energy_pj() == pytest.approx(sum(cost.energy_pj(p) for p in ("compute", "weights", "activations")))


def test_interpolation_rule():
    t = EnergyTable()
    assert t.op("int", "mult", 8, 8) == pytest.approx(0.2) and t.op("int", "mult", 32, 32) == pytest.approx(3.1)
    assert t.op("int", "mult", 4, 4) == pytest.approx(0.2 * 16 / 64)
    assert t.op("int", "mult", 16, 16) == pytest.approx(0.2 + (256 - 64) / (1024 - 64) * 2.9)
    assert t.op("int", "mult", 2, 32) == t.op("int", "mult", 8, 8)     # by the product of the widths
    assert t.op("int", "add", 24) == pytest.approx(0.03 + 16 / 24 * 0.07)
    assert t.op("int", "add", 48) == pytest.approx(0.1 + 16 / 24 * 0.07)   # past 32: the last segment goes on
    assert t.op("float", "add", 16) == pytest.approx(0.4) and t.op("float", "mult", 32, 32) == pytest.approx(3.7)


def test_pow2_weight_bits_agree_with_the_search_report():
    from ristretto_cli.cost.model import pow2_weight_bits
    from ristretto_cli.quantize.choose import pow2_weight_bits as search_bits

    for lo, hi in ((-8, -1), (-4, -4), (-16, 3), (-2, -1)):
        assert pow2_weight_bits(lo, hi) == search_bits(lo, hi)


@pytest.mark.parametrize("cand", ["dfp", "minifloat", "pow2"])
def test_candidate_weight_bits_equal_the_search_reports_parameter_memory(tmp_path, cand):
    from ristretto_cli.caffe.prototxt import read_net
    from ristretto_cli.net import load_net
    from ristretto_cli.quantize.costing import candidate_cost
    from ristretto_cli.quantize.observe import IntegerLengths
    from ristretto_cli.quantize.report import parameter_memory
    from ristretto_cli.quantize.rewrite import dfp, minifloat, power_of_2

    model = _write(tmp_path, "lenet.prototxt", **FLOAT)
    net = load_net(str(model))
    c = {"dfp": dfp(2, 4, 8), "minifloat": minifloat(8, 4), "pow2": power_of_2()}[cand]
    lengths = {n: IntegerLengths(1, 3, 0) for n in ("conv1", "conv2", "ip1", "ip2")}
    got = candidate_cost(net, read_net(str(model)), c, lengths)
    assert got.weight_bits == parameter_memory(net, c)["bits_after"]
    assert got.macs == sum(HAND_MACS.values())


# --------------------------------------------------------------------------- energy table files


def test_yaml_overrides_entries(tmp_path):
    y = tmp_path / "e.yaml"
    y.write_text("# my process\nsource: my 7 nm figures\nint_mult_8: 0.4\ndram_read_64: 640\nint_add_4: 0.01\n")
    t = load_energy_table(str(y))
    assert t.source == "my 7 nm figures" and t.dram_read_64 == 640 and t.sram_read_64 == 10
    assert t.op("int", "mult", 8, 4) == pytest.approx(0.4 * 32 / 64)
    assert t.op("int", "add", 4) == pytest.approx(0.01)       # a new point
    cost = _cost(_write(tmp_path, "q.prototxt", **QUANTIZED), energy=t)
    by = {l.name: l for l in cost.layers}
    assert by["conv1"].compute_pj == pytest.approx(288_000 * (0.2 + 0.05625))
    assert cost.energy_pj("weights") == pytest.approx(1_978_800 * 10)


@pytest.mark.parametrize("text, message", [
    ("int_mult_8: [0.2\n", "e.yaml:2:1: not valid YAML"),
    ("int_mult_8: 0.2\nint_mul_8: 0.3\n", "e.yaml:2: unknown key 'int_mul_8'; known keys: int_add_N"),
    ("int_mult_8: -1\n", "e.yaml:1: 'int_mult_8' must be a finite number of picojoules >= 0"),
    ("int_mult_8: lots\n", "'int_mult_8' must be a finite number"),
    ("int_add_0: 1\n", "the width must be 1..64 bits"),
    ("- int_mult_8\n", "e.yaml: expected a mapping of energy entries"),
])
def test_bad_yaml_is_a_one_line_error(tmp_path, capsys, text, message):
    y = tmp_path / "e.yaml"
    y.write_text(text)
    with pytest.raises(RistrettoError, match=None) as exc:
        load_energy_table(str(y))
    assert message in str(exc.value) and "\n" not in str(exc.value)
    model = _write(tmp_path, "lenet.prototxt", **FLOAT)
    out = tmp_path / "c.json"
    status, _, err = run_cli(["cost", "--model", model, "--energy", y, "--json", out], capsys)
    assert status == 2 and err.startswith("ristretto: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_missing_energy_file_names_it(tmp_path, capsys):
    model = _write(tmp_path, "lenet.prototxt", **FLOAT)
    status, _, err = run_cli(["cost", "--model", model, "--energy", tmp_path / "none.yaml"], capsys)
    assert status == 2 and "none.yaml: no such file" in err


# --------------------------------------------------------------------------- the command


def test_cost_command_table_and_json(tmp_path, capsys):
    model = _write(tmp_path, "q.prototxt", **QUANTIZED)
    out = tmp_path / "cost.json"
    status, shown, err = run_cli(["cost", "--model", model, "--json", out], capsys)
    assert status == 0, err
    assert "62,336,000" in shown and "1,978,800" in shown and "peak 184,320" in shown
    assert "fixed in 8 w 4 out 8" in shown and "Horowitz" in err
    data = json.loads(out.read_text())
    assert data["total"]["macs"] == 2_293_000 and data["total"]["bitops"] == 62_336_000
    assert data["total"]["weight_bits"] == 1_978_800 and data["peak_activation"]["bits"] == 184_320
    assert data["energy_table"]["int_mult_8"] == 0.2 and data["batch"] == 1
    assert [l["name"] for l in data["layers"]][:3] == ["data", "conv1", "pool1"]
    # --json -: stdout holds the JSON only, the tables go to stderr
    status, shown, err = run_cli(["cost", "--model", model, "--json", "-"], capsys)
    assert status == 0 and json.loads(shown)["total"]["bitops"] == 62_336_000 and "62,336,000" in err
